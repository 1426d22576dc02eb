//! What a mirror can give back, read without writing a byte: its live entries (the
//! index's records that DST still holds, or DST's own listing when there is no usable
//! index) and the versions kept in `DST/.datasafe/versions`, each under the source path
//! it stands for and with the form (plain or gzip) it is stored in. Also the `versions`
//! command, which lists them.
//!
//! Every look at the mirror goes through its store ([`Reader`]), which never follows a
//! symlink inside DST: a name behind a folder that is a symlink is simply not there,
//! and files are opened only if they are regular files. Choosing which content to
//! restore and writing it is `restore`'s job, not this file's.

use crate::config::{Dest, NotAFolder, check_dir};
use crate::index::{self, Index};

use crate::engine::scan;
use crate::model::Stored;
use crate::model::strip_gz;
use crate::model::{Kind, Meta};
use crate::output::names::{esc, human_bytes, io_message};
use crate::read::Breaker;
use crate::store::local::Local;
use crate::store::versions::{self, Version};
use crate::store::{self, Reader, layout};
use serde::Serialize;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// A mirror opened for reading what it holds now and what it kept.
pub struct History {
    /// The mirror, read through its store.
    store: Arc<dyn Reader>,
    /// The index, when there is a readable one.
    index: Option<Index>,
    /// Whether the mirror says it is gzipped (the index's `compress` fact); `None` when
    /// it does not say, and versions are then recognised by name and gzip magic.
    compress: Option<bool>,
    /// `DST/.datasafe/versions` is a real folder.
    has_versions_dir: bool,
    /// A remote mirror's breaker: says when its host was given up on.
    breaker: Option<Arc<Breaker>>,
}

/// One version, under the source path it stands for.
#[derive(Clone, Debug)]
pub struct Kept {
    /// The source-relative path it is a version of.
    pub source: PathBuf,
    /// Its name, time and sequence number.
    pub version: Version,
    /// How its content is stored.
    pub stored: Stored,
    /// Its `lstat`: mode and mtime are the source's at the time; size is the stored size.
    /// For a prefix marker, what the marker records (the size is of the content).
    pub meta: Meta,
    /// Its inode number in DST, where the store has them (else 0, and 0 for a prefix
    /// marker): versions of names of one file are links of one stored file.
    pub ino: u64,
}

/// One entry of the live mirror, under its source path.
#[derive(Clone, Debug)]
pub struct Live {
    /// The source-relative path.
    pub source: PathBuf,
    /// The name it is stored under in DST.
    pub name: PathBuf,
    /// File, folder or symlink.
    pub kind: Kind,
    /// Plain or gzipped (files only).
    pub stored: Stored,
    /// Files and links: DST's own `lstat` (the mirror keeps the source's mode and mtime).
    /// Folders: what the index recorded, or DST's `lstat` without an index.
    pub meta: Meta,
    /// Where a symlink points.
    pub target: Option<PathBuf>,
    /// Owner, extended attributes and ACLs the index recorded (without an index: a
    /// local DST's owner only).
    pub attrs: crate::model::Attrs,
    /// Its inode number in DST, where the store has them (else 0).
    pub ino: u64,
}

/// Why a mirror cannot be read, or a command on it cannot start. Each message names the
/// path and says what to do; the runner prints it as the one `error:` line (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// DST is a file (or another non-folder).
    #[error("mirror {} is not a directory; give the DST folder of a sync or watch", esc(.0))]
    NotADirectory(PathBuf),
    /// Nothing is at DST.
    #[error("mirror {} does not exist; check the path (or mount its drive)", esc(.0))]
    Missing(PathBuf),
    /// DST cannot be looked at or opened.
    #[error("mirror {} cannot be read: {}", esc(.path), io_message(.source))]
    Unreadable {
        /// DST as given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `DST/.datasafe` is there but no folder (a symlink planted in the mirror).
    #[error(
        "{} is not a folder (a symlink?); refusing to read the mirror's state through it",
        esc(.0)
    )]
    StateNotAFolder(PathBuf),
    /// The index is there but cannot be read.
    #[error("{0}; move the index aside to restore from the mirror's own listing")]
    Index(#[source] index::IndexError),
    /// A PATH argument that is absolute or climbs out with `..`.
    #[error("path {} must be relative to the mirror's root, like docs/report.txt", esc(.0))]
    NotRelative(PathBuf),
    /// `versions` of a folder that has neither an index nor versions.
    #[error(
        "{} is no mirror: it has no index and no versions; give the DST folder of a \
         sync or watch",
        esc(.0)
    )]
    NoMirror(PathBuf),
    /// `versions --json` could not be written.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A remote DST's host cannot be reached: ssh's reason, naming the host.
    #[error("{}", io_message(.0))]
    Unreachable(io::Error),
}

/// The folder that holds a store's index (the `state_dir` the index functions take).
pub fn index_dir(store: &dyn Reader) -> PathBuf {
    let file = store.index_file();
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl History {
    /// Opens the mirror at `dst` for reading (the caller exits with 2 on an error).
    pub fn open(dst: &Dest) -> Result<History, HistoryError> {
        let dst = match dst {
            Dest::Local(path) => path,
            Dest::Sftp(_) | Dest::S3(_) => {
                let shown = dst.display();
                let breaker = crate::read::open_remote(dst).map_err(|e| match e {
                    crate::read::Unopened::Unreachable(e) => HistoryError::Unreachable(e),
                    crate::read::Unopened::NotAFolder(e) => not_a_folder(shown, e),
                })?;
                return History::of_store(breaker.clone(), Some(breaker));
            }
        };
        let cannot_read = |source| HistoryError::Unreadable {
            path: dst.to_path_buf(),
            source,
        };
        check_dir(dst).map_err(|e| not_a_folder(dst.to_path_buf(), e))?;
        // Canonical: a DST reached through a symlink is that folder, and names are shown
        // under its real path.
        let canonical = std::fs::canonicalize(dst).unwrap_or_else(|_| dst.to_path_buf());
        let store = Local::open(&canonical).map_err(cannot_read)?;
        History::of_store(Arc::new(store), None)
    }

    /// Opens a mirror for reading through its store (behind `breaker` if remote).
    fn of_store(
        store: Arc<dyn Reader>,
        breaker: Option<Arc<Breaker>>,
    ) -> Result<History, HistoryError> {
        let state = layout::state();
        let state_is_dir = match store.stat(state) {
            Ok(Some(s)) if s.kind == Kind::Dir => true,
            Ok(Some(_)) => {
                return Err(HistoryError::StateNotAFolder(store.display(state)));
            }
            _ => false,
        };
        let versions_dir = layout::versions();
        let has_versions_dir = state_is_dir
            && match store.stat(&versions_dir) {
                Ok(Some(s)) if s.kind == Kind::Dir => true,
                Ok(Some(_)) => {
                    log::warn!(
                        "{} is not a folder (a symlink?); its versions are left alone",
                        esc(&store.display(&versions_dir))
                    );
                    false
                }
                _ => false,
            };
        let index = if state_is_dir {
            // Untouched: not even SQLite's `-wal`/`-shm` may appear in DST.
            match Index::open_untouched(&index_dir(&*store)) {
                Ok(index) => index,
                Err(e) => {
                    log::warn!("{e}; reading the mirror's own listing instead");
                    None
                }
            }
        } else {
            None
        };
        let fact = |key: &str| index.as_ref().and_then(|i| i.mirror_fact(key));
        // A mirror gzipped once and plain now holds versions of both forms: then each
        // version's own bytes decide.
        let compress = match (
            fact("compress").as_deref(),
            fact("compressed_ever").as_deref(),
        ) {
            (Some("1"), _) => Some(true),
            (Some("0"), Some("1")) => None,
            (Some("0"), _) => Some(false),
            _ => None,
        };
        let history = History {
            store,
            index,
            compress,
            has_versions_dir,
            breaker,
        };
        history.reachable()?;
        Ok(history)
    }

    /// `Err` if the mirror's host was given up on since it was opened: what was read
    /// meanwhile is not the mirror (requests failed), and every further one fails.
    pub fn reachable(&self) -> Result<(), HistoryError> {
        match self.breaker.as_ref().and_then(|b| b.tripped()) {
            Some(e) => Err(HistoryError::Unreachable(e)),
            None => Ok(()),
        }
    }

    /// A remote mirror's breaker (`None` for a folder on this machine).
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.breaker.as_ref()
    }

    /// The mirror's store.
    pub fn store(&self) -> &Arc<dyn Reader> {
        &self.store
    }

    /// The names the index recorded for its owners' numbers (none without an index,
    /// or one from before owners were kept).
    pub fn owner_names(&self) -> index::OwnerNames {
        let names = self.index.as_ref().map(Index::owner_names);
        match names {
            Some(Ok(names)) => names,
            Some(Err(e)) => {
                log::warn!("{e}; owners are restored by number");
                index::OwnerNames::default()
            }
            None => index::OwnerNames::default(),
        }
    }

    /// True if the mirror has a readable index.
    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    /// Every version, oldest first (by time, then sequence). A version that vanished
    /// since the listing is left out.
    pub fn versions(&self) -> Vec<Kept> {
        if !self.has_versions_dir {
            return Vec::new();
        }
        let mut kept = Vec::new();
        for version in versions::list_in(&*self.store) {
            let name = version_name(&version.path);
            let Ok(Some(stat)) = self.store.stat(&name) else {
                continue;
            };
            if let Some(prefix) = version.prefix {
                // A prefix marker: the old content's size, mode and mtime are recorded
                // in it; its bytes are the start of the content after it.
                if stat.kind != Kind::Symlink {
                    continue;
                }
                let source = match (self.compress, strip_gz(&version.stored)) {
                    (Some(false), _) | (_, None) => version.stored.clone(),
                    (_, Some(plain)) => plain,
                };
                kept.push(Kept {
                    source,
                    stored: Stored::Plain,
                    meta: Meta {
                        size: prefix.size,
                        mtime: filetime::FileTime::from_unix_time(prefix.mtime.0, prefix.mtime.1),
                        mode: prefix.mode,
                    },
                    version,
                    ino: 0,
                });
                continue;
            }
            if stat.kind != Kind::File {
                continue;
            }
            let stored = self.version_form(&version.stored, &name);
            kept.push(Kept {
                source: stored.source_of(&version.stored),
                version,
                stored,
                meta: stat.meta(),
                ino: stat.ino,
            });
        }
        kept
    }

    /// A version is gzipped when the mirror says it is a gzipped mirror (and its content
    /// starts with the gzip magic); when the mirror does not say (no index, an index older than the fact, or a mirror that was
    /// gzipped once), when its name ends in `.gz` and its content starts with the gzip
    /// magic.
    fn version_form(&self, stored: &Path, name: &Path) -> Stored {
        let named_gz = strip_gz(stored).is_some();
        // Even in a gzipped mirror, a `.gz` name may hold plain bytes: a file that was
        // in DST before it became a mirror, kept as it was.
        let gzip = self.compress.unwrap_or(true) && named_gz && self.starts_like_gzip(name);
        if gzip { Stored::Gzip } else { Stored::Plain }
    }

    /// True if the stored file `name` starts with gzip's magic.
    fn starts_like_gzip(&self, name: &Path) -> bool {
        self.store
            .open(name)
            .and_then(|mut file| store::starts_like_gzip(&mut *file))
            .unwrap_or(false)
    }

    /// The live mirror: the index's records that DST still holds (a record whose file
    /// is gone from DST is reported and left out), or, without an index, what DST lists.
    /// The root folder itself is not an entry.
    pub fn live(&self) -> Result<Vec<Live>, HistoryError> {
        let store = &*self.store;
        let recorded = match &self.index {
            // Read again through `load_untouched`, which also copes with a writer that
            // started since the index was opened.
            Some(_) => index::load_untouched(&index_dir(store)).map_err(HistoryError::Index)?,
            None => None,
        };
        let trusted_listing = recorded.is_none();
        let state = recorded.unwrap_or_else(|| {
            let listing = scan::list_store(store, Path::new(""), true);
            index::state_from_store(store, &listing)
        });
        let mut names: Vec<(PathBuf, _)> = state
            .into_iter()
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, record)| (PathBuf::from(name), record))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        // What DST holds under each name, reached without passing a symlink (in name
        // order, so the names of one folder are looked at from one handle on it).
        let found = match trusted_listing {
            true => Vec::new(),
            false => store.stat_each(&names.iter().map(|(n, _)| n.as_path()).collect::<Vec<_>>()),
        };
        // Not a file per record "not in the mirror" when its host is gone.
        self.reachable()?;
        let mut live = Vec::with_capacity(names.len());
        for (i, (name, record)) in names.into_iter().enumerate() {
            let present = if trusted_listing {
                Some((record.meta, record.disk.map_or(0, |d| d.ino)))
            } else {
                match found.get(i) {
                    Some(Ok(Some(stat))) if stat.kind == record.kind => {
                        Some((stat.meta(), stat.ino))
                    }
                    _ => None,
                }
            };
            let Some((on_disk, ino)) = present else {
                log::warn!(
                    "{} is in the index but not in the mirror; it is left out (run sync to bring the mirror up to date)",
                    esc(&store.display(&name))
                );
                continue;
            };
            // A store that keeps whole seconds (SFTP v3) and no link times: the index
            // recorded the source's times exactly, and gives them back where DST agrees
            // as far as it can tell.
            let coarse = !trusted_listing && !store.caps().nanosecond_mtimes;
            let exact = |on_disk: Meta| match coarse
                && on_disk.mtime.unix_seconds() == record.meta.mtime.unix_seconds()
            {
                true => Meta {
                    mtime: record.meta.mtime,
                    ..on_disk
                },
                false => on_disk,
            };
            let (meta, target) = match record.kind {
                Kind::Dir => (record.meta, None),
                Kind::Symlink => {
                    let target = match store.read_link(&name) {
                        Ok(target) => target,
                        Err(_) => continue,
                    };
                    let meta = match coarse {
                        true => Meta {
                            mtime: record.meta.mtime,
                            ..on_disk
                        },
                        false => on_disk,
                    };
                    (meta, Some(target))
                }
                _ => (exact(on_disk), None),
            };
            live.push(Live {
                source: record.stored.source_of(&name),
                name,
                kind: record.kind,
                stored: record.stored,
                meta,
                target,
                // Without an index, DST's own owners, where they can be the source's (a
                // folder here; a server's numbers are its users').
                attrs: match trusted_listing && !store.caps().owners {
                    true => crate::model::Attrs::default(),
                    false => record.attrs,
                },
                ino,
            });
        }
        self.reachable()?;
        Ok(live)
    }
}

/// Why the mirror `dst` (as shown) is no folder to read.
fn not_a_folder(dst: PathBuf, e: NotAFolder) -> HistoryError {
    match e {
        NotAFolder::NotADirectory => HistoryError::NotADirectory(dst),
        NotAFolder::Missing(_) => HistoryError::Missing(dst),
        NotAFolder::Unreadable(source) => HistoryError::Unreadable { path: dst, source },
    }
}

/// A version's name in the mirror, from its path inside the versions folder.
pub fn version_name(path: &Path) -> PathBuf {
    layout::versions().join(path)
}

/// A PATH argument as a source-relative path: `.` components and trailing slashes
/// dropped; absolute paths and `..` refused. An empty result means the whole mirror.
pub fn source_path(arg: &Path) -> Result<PathBuf, HistoryError> {
    let mut out = PathBuf::new();
    for part in arg.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            _ => {
                return Err(HistoryError::NotRelative(arg.to_path_buf()));
            }
        }
    }
    Ok(out)
}

/// True if `source` is one of `scopes` or lies under one (everything, for no scopes).
pub fn in_scope(source: &Path, scopes: &[PathBuf]) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| source.starts_with(s))
}

/// One line of `versions --json`.
#[derive(Debug, Serialize)]
struct Listed {
    /// The source-relative path.
    path: String,
    /// When it was replaced or deleted (local time).
    time: String,
    /// The original (un-gzipped) size in bytes.
    size: u64,
    /// The version's path relative to DST.
    file: String,
}

/// What a set of versions uses, for `versions --summary`.
#[derive(Debug, Default, Serialize, PartialEq)]
struct Usage {
    /// The top-level folder (`folder/`), `.` for files at the top level, or empty for
    /// the total.
    folder: String,
    /// How many versions.
    count: u64,
    /// Their size on disk (gzipped size in a gzipped mirror).
    bytes: u64,
    /// The oldest one's time (local), empty when there are none.
    oldest: String,
    /// The newest one's time (local).
    newest: String,
    /// The stored files counted in `bytes` (inode numbers): versions of the names of
    /// one file are links of one stored file, which takes its room once.
    #[serde(skip)]
    files: std::collections::HashSet<u64>,
}

impl Usage {
    fn add(&mut self, k: &Kept) {
        let time = k.version.at.format(crate::output::TIME_FORMAT).to_string();
        self.count += 1;
        // A prefix marker takes no room: its bytes are in the content after it.
        if k.version.prefix.is_none() && (k.ino == 0 || self.files.insert(k.ino)) {
            self.bytes += k.meta.size;
        }
        if self.oldest.is_empty() || time < self.oldest {
            self.oldest = time.clone();
        }
        if time > self.newest {
            self.newest = time;
        }
    }
}

/// `versions --summary --json`.
#[derive(Debug, Serialize)]
struct UsageReport {
    total: Usage,
    folders: Vec<Usage>,
}

/// The total and the per-folder use of `kept`, folders sorted by name.
fn usage(kept: &[Kept]) -> UsageReport {
    let mut total = Usage::default();
    let mut folders: std::collections::BTreeMap<String, Usage> = Default::default();
    for k in kept {
        total.add(k);
        let mut parts = k.source.components();
        let first = parts.next();
        let folder = match (first, parts.next()) {
            (Some(first), Some(_)) => format!("{}/", esc(Path::new(first.as_os_str()))),
            _ => ".".to_string(),
        };
        let entry = folders.entry(folder.clone()).or_default();
        entry.folder = folder;
        entry.add(k);
    }
    UsageReport {
        total,
        folders: folders.into_values().collect(),
    }
}

/// Prints `versions --summary`: the total on one line, then one line per top-level
/// folder.
fn print_usage(dst: &Dest, report: &UsageReport, json: bool) -> Result<(), HistoryError> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    let t = &report.total;
    if t.count == 0 {
        println!("versions in {dst}: none");
        return Ok(());
    }
    println!(
        "versions in {dst}: {}, {} on disk, oldest {}, newest {}",
        t.count,
        human_bytes(t.bytes),
        t.oldest,
        t.newest
    );
    let width = report
        .folders
        .iter()
        .map(|f| f.folder.chars().count())
        .max()
        .unwrap_or(0);
    for f in &report.folders {
        println!(
            "  {:<width$}  {:>6}  {:>10}  {} .. {}",
            f.folder,
            f.count,
            human_bytes(f.bytes),
            f.oldest,
            f.newest
        );
    }
    Ok(())
}

/// `datasafe versions DST [PATH] [--json] [--summary]`: every version (of one file, or
/// under one folder), grouped by path and oldest first; with `summary`, what they use.
/// An error is for the runner to print (exit 2).
pub fn list_command(
    dst: &Dest,
    path: Option<&Path>,
    json: bool,
    summary: bool,
) -> Result<(), HistoryError> {
    let scopes: Vec<PathBuf> = path
        .map(source_path)
        .transpose()?
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    let history = History::open(dst)?;
    let all = history.versions();
    history.reachable()?;
    if !history.has_index() && all.is_empty() {
        // "No versions" would read as a mirror that kept none: say it is no mirror.
        return Err(HistoryError::NoMirror(dst.display()));
    }
    // A prefix marker is no version: it holds no bytes, only where the old content
    // lies inside the newer copy (for `restore --at`), so it is not listed.
    let mut kept: Vec<Kept> = all
        .into_iter()
        .filter(|k| k.version.prefix.is_none() && in_scope(&k.source, &scopes))
        .collect();
    if summary {
        return print_usage(dst, &usage(&kept), json);
    }
    // Stable: within a path, `versions` already has them oldest first.
    kept.sort_by(|a, b| a.source.cmp(&b.source));
    let store = history.store();
    let mut listed = Vec::with_capacity(kept.len());
    for k in &kept {
        let name = version_name(&k.version.path);
        let size = match k.stored {
            Stored::Plain => k.meta.size,
            Stored::Gzip => match store
                .open(&name)
                .and_then(|mut file| store::gzip_isize(&mut *file))
            {
                Ok(size) => size.unwrap_or(k.meta.size),
                Err(e) => {
                    log::warn!(
                        "{}: cannot read its gzip trailer: {}",
                        esc(&store.display(&name)),
                        io_message(&e)
                    );
                    k.meta.size
                }
            },
        };
        listed.push(Listed {
            path: esc(&k.source).to_string(),
            time: k.version.at.format(crate::output::TIME_FORMAT).to_string(),
            size,
            file: esc(&name).to_string(),
        });
    }
    if listed.is_empty() {
        let what = match path {
            Some(p) if !scopes.is_empty() => format!("no versions of {} in {dst}", esc(p)),
            _ => format!("no versions in {dst}"),
        };
        eprintln!("{what}");
    }
    if json {
        println!("{}", serde_json::to_string(&listed)?);
    } else {
        for l in &listed {
            println!(
                "{}  {}  {}  {}",
                l.time,
                human_bytes(l.size),
                l.path,
                l.file
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_arguments_become_source_relative_paths() {
        assert_eq!(
            source_path(Path::new("./docs//a.txt")).unwrap(),
            Path::new("docs/a.txt")
        );
        assert_eq!(source_path(Path::new("docs/")).unwrap(), Path::new("docs"));
        assert_eq!(source_path(Path::new(".")).unwrap(), Path::new(""));
        assert!(source_path(Path::new("/etc/passwd")).is_err());
        assert!(source_path(Path::new("docs/../../x")).is_err());
    }

    #[test]
    fn usage_sums_per_top_level_folder_and_in_all() {
        let kept = |source: &str, day: u32, size: u64| Kept {
            source: source.into(),
            version: Version {
                path: source.into(),
                stored: source.into(),
                at: chrono::NaiveDate::from_ymd_opt(2026, 12, day)
                    .and_then(|d| d.and_hms_opt(10, 0, 0))
                    .unwrap(),
                seq: 0,
                prefix: None,
            },
            stored: Stored::Plain,
            meta: Meta {
                size,
                mtime: filetime::FileTime::zero(),
                mode: 0o644,
            },
            ino: 0,
        };
        let report = usage(&[
            kept("docs/a.txt", 3, 10),
            kept("docs/deep/b.txt", 1, 5),
            kept("top.txt", 2, 7),
        ]);
        assert_eq!(
            (report.total.count, report.total.bytes),
            (3, 22),
            "{report:?}"
        );
        assert_eq!(report.total.oldest, "2026-12-01 10:00:00");
        assert_eq!(report.total.newest, "2026-12-03 10:00:00");
        let folders: Vec<(&str, u64, u64)> = report
            .folders
            .iter()
            .map(|f| (f.folder.as_str(), f.count, f.bytes))
            .collect();
        assert_eq!(folders, [(".", 1, 7), ("docs/", 2, 15)]);
    }

    #[test]
    fn scopes_match_whole_components() {
        let scopes = [PathBuf::from("docs")];
        assert!(in_scope(Path::new("docs"), &scopes));
        assert!(in_scope(Path::new("docs/a.txt"), &scopes));
        assert!(!in_scope(Path::new("docs2/a.txt"), &scopes));
        assert!(in_scope(Path::new("anything"), &[]));
    }
}

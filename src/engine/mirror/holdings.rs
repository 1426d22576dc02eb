//! What DST holds, one folder at a time ([`Holding`]), for a pass to plan against while
//! it walks SRC: the records of a folder's names and the names DST lists there. A
//! thread ([`Feed::spawn`]) sends the folders in walk order (depth first, each folder's
//! names in byte order: the order of `Path`'s comparison, which is the source walk's),
//! a bounded number ahead of the scanner, so a pass holds a few folders' worth of what
//! DST holds instead of a map of every name.
//!
//! Where the records come from:
//! - the index, read folder by folder ([`Index::children`]) on a read-only connection,
//!   when it describes DST (`trusted`); DST is listed beside it where listing is cheap
//!   (a folder here), in detail for a deeper [`Check`] (each folder's records are
//!   checked against it with `repair::inspect_store`), and not at all for a remote DST;
//! - DST itself, listed folder by folder in detail, when there is no index to trust
//!   (the index is rebuilt from it);
//! - a remote DST without an index to trust is listed in one go (its store's own walk:
//!   one flat listing for S3) and the records made from that listing are sent folder by
//!   folder.

use crate::engine::plan::Recorded;
use crate::engine::repair::{self, AttrsSet, Check};
use crate::engine::scan::{self, DestItem};
use crate::index::{self, Index};
use crate::model::{Kind, MirrorState, NameHasher, Record};
use crate::store::layout::STATE_DIR;
use crate::store::{Listed, Reader};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Folders the feed reads ahead of the scanner.
const AHEAD: usize = 64;

/// What DST holds directly inside one folder.
#[derive(Debug, Default)]
pub(super) struct Holding {
    /// The folder (relative to DST; empty for the root).
    pub(super) rel: PathBuf,
    /// The names DST lists in it, with their kinds; `None` where DST is not listed (a
    /// remote DST with an index: what it holds is what the records say).
    pub(super) present: Option<HashMap<OsString, Kind, NameHasher>>,
    /// False if DST's folder could not be listed (other than being missing): what it
    /// holds is unknown, so no record in it is called stale.
    pub(super) listed: bool,
    /// The records of the names in it (for the root, also the root's own under "").
    pub(super) records: FolderRecords,
    /// Child folders with records below them but none of their own.
    pub(super) below: Vec<OsString>,
    /// Names whose digest a content check learned (DST holds what SRC holds now).
    pub(super) learned: HashSet<OsString, NameHasher>,
}

impl Holding {
    /// Nothing held in `rel`: listed as empty where DST is listed.
    fn empty(rel: &Path, listing: bool) -> Holding {
        Holding {
            rel: rel.to_path_buf(),
            present: listing.then(HashMap::default),
            listed: true,
            ..Holding::default()
        }
    }

    /// Each name DST holds here with its kind: as listed, or as the records say.
    pub(super) fn names(&self) -> Vec<(&Path, Kind)> {
        match &self.present {
            Some(present) => present.iter().map(|(n, k)| (Path::new(n), *k)).collect(),
            None => self
                .records
                .iter()
                .filter(|(n, _)| !n.is_empty())
                .map(|(n, r)| (Path::new(n), r.kind))
                .collect(),
        }
    }

    /// What DST holds under `name`: as listed, or as the records say.
    pub(super) fn kind_of(&self, name: &OsString) -> Option<Kind> {
        match &self.present {
            Some(present) => present.get(name).copied(),
            None => self.records.get(name).map(|r| r.kind),
        }
    }

    /// How many of the names held here are not folders (the deletion guard's count).
    pub(super) fn files(&self) -> u64 {
        match &self.present {
            Some(present) => present.values().filter(|k| **k != Kind::Dir).count() as u64,
            None => self
                .records
                .iter()
                .filter(|(n, r)| !n.is_empty() && r.kind != Kind::Dir)
                .count() as u64,
        }
    }
}

/// One folder's records, sorted by name: a folder of 40,000 names costs its records
/// and no hash table beside them.
#[derive(Debug, Default)]
pub(super) struct FolderRecords(Vec<(OsString, Record)>);

impl FolderRecords {
    /// The records in `pairs`, in any order.
    fn sorted(pairs: Vec<(OsString, Record)>) -> FolderRecords {
        let mut records = FolderRecords(pairs);
        records.sort();
        records
    }

    /// Adds a record, out of order: [`Self::sort`] must follow.
    fn push(&mut self, name: OsString, record: Record) {
        self.0.push((name, record));
    }

    fn sort(&mut self) {
        self.0.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    /// The record of `name`.
    pub(super) fn get(&self, name: &OsStr) -> Option<&Record> {
        self.0
            .binary_search_by(|(n, _)| n.as_os_str().cmp(name))
            .ok()
            .map(|at| &self.0[at].1)
    }

    /// Whether `name` has a record.
    pub(super) fn contains_key(&self, name: &OsStr) -> bool {
        self.get(name).is_some()
    }

    /// Each name with its record, in name order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&OsString, &Record)> {
        self.0.iter().map(|(n, r)| (n, r))
    }

    /// Each name, in order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &OsString> {
        self.0.iter().map(|(n, _)| n)
    }
}

impl From<MirrorState> for FolderRecords {
    fn from(state: MirrorState) -> FolderRecords {
        FolderRecords::sorted(state.into_iter().collect())
    }
}

impl Recorded for FolderRecords {
    fn record(&self, name: &OsStr) -> Option<&Record> {
        self.get(name)
    }
}

/// A deeper look at DST than its names, applied to each folder's records.
pub(super) struct Look {
    pub(super) check: Check,
    pub(super) src: PathBuf,
    pub(super) jobs: usize,
    pub(super) stop: Arc<AtomicBool>,
    /// A dry run: what is wrong is said, but nothing is written again.
    pub(super) dry_run: bool,
    /// The owners and attributes compared with what DST holds.
    pub(super) attrs: AttrsSet,
}

impl Look {
    /// Applies the check to `records` given DST's `items` (see
    /// `repair::inspect_store`): the wrong records are taken out; returns the names
    /// whose digest was learned.
    fn inspect(
        &self,
        records: &mut MirrorState,
        items: &[DestItem],
        dst: &dyn Reader,
    ) -> Vec<OsString> {
        repair::inspect_store(
            &self.check,
            records,
            items,
            &self.src,
            dst,
            self.jobs,
            &self.stop,
            self.dry_run,
            &self.attrs,
        )
    }
}

/// Where a pass's records come from (see the module's notes).
pub(super) enum Records {
    /// The index, which describes DST.
    Index(Index),
    /// The records of a narrower pass's scope, read by the engine's own connection
    /// (which sees what it has not committed yet).
    Loaded(MirrorState),
    /// DST itself: the index is being rebuilt.
    Rebuild,
}

/// The folders of what DST holds, in walk order, from a thread of their own.
pub(super) struct Feed {
    rx: Receiver<Holding>,
    next: Option<Holding>,
    /// Whether DST is listed (an absent folder is then one listed as empty).
    listing: bool,
    /// The records come from DST itself: what the scanner finds unchanged is recorded.
    pub(super) rebuilding: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feed {
    /// Starts reading what DST holds at and below `scope` (all of it for an empty one):
    /// first the folder above `scope` with only `scope` in it (for a narrower pass),
    /// then `scope` and each folder below it.
    pub(super) fn spawn(
        dst: Option<Arc<dyn Reader>>,
        scope: &Path,
        records: Records,
        look: Option<Look>,
    ) -> Feed {
        let cheap = dst.as_ref().is_none_or(|d| d.caps().cheap_listing);
        let detail = look.as_ref().is_some_and(|l| l.check.needs_detail());
        let rebuilding = matches!(records, Records::Rebuild);
        // A remote DST is listed only for a deeper look or to rebuild the index.
        let listing = cheap || detail || rebuilding;
        let (tx, rx) = bounded(AHEAD);
        let scope = scope.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("holdings".into())
            .spawn(move || {
                let Some(dst) = dst else {
                    // Nothing to list where DST cannot be opened (a dry run into a new
                    // folder): nothing is there.
                    return;
                };
                let reader = Reading {
                    dst: &*dst,
                    records,
                    listing,
                    detail: detail || rebuilding,
                    look,
                };
                if (!cheap && rebuilding) || matches!(reader.records, Records::Loaded(_)) {
                    reader.all_at_once(&scope, &tx);
                } else {
                    reader.folder_by_folder(&scope, &tx);
                }
            })
            .ok();
        Feed {
            rx,
            next: None,
            listing,
            rebuilding,
            thread,
        }
    }

    /// What DST holds in the folder `rel`; the folders before it (which the source does
    /// not have) go to `orphan` first. Folders must be asked for in walk order.
    pub(super) fn take(&mut self, rel: &Path, mut orphan: impl FnMut(Holding)) -> Holding {
        loop {
            let Some(next) = self.next.take().or_else(|| self.rx.recv().ok()) else {
                return Holding::empty(rel, self.listing);
            };
            match next.rel.as_path().cmp(rel) {
                std::cmp::Ordering::Less => orphan(next),
                std::cmp::Ordering::Equal => return next,
                std::cmp::Ordering::Greater => {
                    self.next = Some(next);
                    return Holding::empty(rel, self.listing);
                }
            }
        }
    }

    /// Hands the folders below `rel` still to come (which the source does not have) to
    /// `orphan`.
    pub(super) fn drain_below(&mut self, rel: &Path, mut orphan: impl FnMut(Holding)) {
        loop {
            let Some(next) = self.next.take().or_else(|| self.rx.recv().ok()) else {
                return;
            };
            if next.rel != rel && next.rel.starts_with(rel) {
                orphan(next);
            } else {
                self.next = Some(next);
                return;
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Closing the channel ends the reader at its next folder.
        let (_, rx) = bounded(0);
        drop(std::mem::replace(&mut self.rx, rx));
        self.next = None;
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The feed's thread.
struct Reading<'a> {
    dst: &'a dyn Reader,
    records: Records,
    listing: bool,
    detail: bool,
    look: Option<Look>,
}

impl Reading<'_> {
    /// Reads DST (and the index) one folder at a time, depth first.
    fn folder_by_folder(&self, scope: &Path, tx: &Sender<Holding>) {
        let mut todo: Vec<PathBuf> = Vec::new();
        if scope.as_os_str().is_empty() {
            todo.push(PathBuf::new());
        } else {
            let (above, kind) = self.just(scope);
            if kind == Some(Kind::Dir) {
                todo.push(scope.to_path_buf());
            }
            if tx.send(above).is_err() {
                return;
            }
        }
        while let Some(dir) = todo.pop() {
            if self
                .look
                .as_ref()
                .is_some_and(|l| l.stop.load(Ordering::Relaxed))
            {
                return;
            }
            let holding = self.folder(&dir);
            let mut folders: Vec<&OsString> = holding
                .records
                .iter()
                .filter(|(n, r)| r.kind == Kind::Dir && !n.is_empty())
                .map(|(n, _)| n)
                .chain(holding.below.iter())
                .chain(
                    holding
                        .present
                        .iter()
                        .flat_map(|p| p.iter().filter(|(_, k)| **k == Kind::Dir).map(|(n, _)| n)),
                )
                .collect();
            folders.sort_unstable_by(|a, b| Path::new(b).cmp(Path::new(a)));
            folders.dedup();
            todo.extend(folders.into_iter().map(PathBuf::from));
            if tx.send(holding).is_err() {
                return;
            }
        }
    }

    /// One folder: its names in DST and their records.
    fn folder(&self, dir: &Path) -> Holding {
        let (items, listed) = match self.listing {
            true => match self.list(dir) {
                Ok(items) => (Some(items), true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => (Some(Vec::new()), true),
                // As an unreadable folder in a whole listing: its names stay unknown,
                // so nothing in it is deleted.
                Err(_) => (Some(Vec::new()), false),
            },
            false => (None, true),
        };
        let (mut records, below): (Vec<(OsString, Record)>, Vec<OsString>) = match &self.records {
            Records::Index(index) => {
                let read = index.children(dir).unwrap_or_else(|e| {
                    log::warn!("{e}");
                    index::Children::default()
                });
                let mut records: Vec<(OsString, Record)> =
                    Vec::with_capacity(read.records.len() + 1);
                if dir.as_os_str().is_empty()
                    && let Ok(Some(root)) = index.get(dir)
                {
                    records.push((OsString::new(), root));
                }
                records.extend(
                    read.records
                        .into_iter()
                        .map(|(n, r)| (n.into_os_string(), r)),
                );
                let below = read.below.into_iter().map(PathBuf::into_os_string);
                (records, below.collect())
            }
            // (Loaded records are sent all at once, never folder by folder.)
            Records::Rebuild | Records::Loaded(_) => (
                index::state_from_store(self.dst, items.as_deref().unwrap_or_default())
                    .into_iter()
                    .collect(),
                Vec::new(),
            ),
        };
        let learned = match &self.look {
            // (`Found` needs no listing: a remote DST is not listed for it.)
            Some(look) => {
                let mut state: MirrorState = records.into_iter().collect();
                let learned =
                    look.inspect(&mut state, items.as_deref().unwrap_or_default(), self.dst);
                records = state.into_iter().collect();
                learned
            }
            None => Vec::new(),
        };
        let records = FolderRecords::sorted(records);
        Holding {
            rel: dir.to_path_buf(),
            present: items.map(|items| {
                items
                    .into_iter()
                    .map(|i| (i.rel.into_os_string(), i.kind))
                    .collect()
            }),
            listed,
            records,
            below,
            learned: learned.into_iter().collect(),
        }
    }

    /// The folder above `scope`, holding only `scope`, and what `scope` is in DST (or
    /// in the records).
    fn just(&self, scope: &Path) -> (Holding, Option<Kind>) {
        let above = scope.parent().unwrap_or(Path::new("")).to_path_buf();
        let stat = self.dst.stat(scope);
        let mut records = MirrorState::default();
        if let Records::Index(index) = &self.records
            && let Ok(Some(record)) = index.get(scope)
        {
            records.insert(scope.as_os_str().to_owned(), record);
        }
        let items: Vec<DestItem> = match &stat {
            Ok(Some(stat)) => vec![DestItem {
                rel: scope.to_path_buf(),
                kind: stat.kind,
                meta: Some(*stat),
            }],
            _ => Vec::new(),
        };
        if matches!(self.records, Records::Rebuild) {
            records = index::state_from_store(self.dst, &items);
        }
        let kind = items
            .first()
            .map(|i| i.kind)
            .or_else(|| records.values().next().map(|r| r.kind));
        let records = FolderRecords::from(records);
        let holding = Holding {
            rel: above,
            present: self.listing.then(|| {
                items
                    .iter()
                    .map(|i| (i.rel.clone().into_os_string(), i.kind))
                    .collect()
            }),
            listed: stat.is_ok(),
            records,
            ..Holding::default()
        };
        (holding, kind)
    }

    /// DST's names in `dir` (without the state folder at the root), with each one's
    /// [`Stat`](crate::store::Stat) when a check or a rebuild needs it.
    fn list(&self, dir: &Path) -> io::Result<Vec<DestItem>> {
        let mut listed: Vec<Listed> = self.dst.list(dir)?;
        if dir.as_os_str().is_empty() {
            listed.retain(|l| l.name != Path::new(STATE_DIR));
        }
        if !self.detail {
            return Ok(listed
                .into_iter()
                .map(|l| DestItem {
                    rel: l.name,
                    kind: l.kind,
                    meta: None,
                })
                .collect());
        }
        let names: Vec<&Path> = listed.iter().map(|l| l.name.as_path()).collect();
        let stats = self.dst.stat_each(&names);
        Ok(listed
            .iter()
            .zip(stats)
            .filter_map(|(l, stat)| match stat {
                Ok(Some(stat)) => Some(DestItem {
                    rel: l.name.clone(),
                    kind: stat.kind,
                    meta: Some(stat),
                }),
                // Gone since the listing; or unreadable, and then written again.
                Ok(None) => None,
                Err(_) => Some(DestItem {
                    rel: l.name.clone(),
                    kind: l.kind,
                    meta: None,
                }),
            })
            .collect())
    }

    /// A remote DST without an index to trust, or the records of a narrower pass: DST
    /// listed once (its store's walk: one flat listing for S3), the records made from
    /// that listing or as loaded, and both sent folder by folder.
    fn all_at_once(self, scope: &Path, tx: &Sender<Holding>) {
        let items = match self.listing {
            true => scan::list_store(self.dst, scope, self.detail),
            false => Vec::new(),
        };
        let mut state = match self.records {
            Records::Loaded(state) => state,
            Records::Index(_) | Records::Rebuild => index::state_from_store(self.dst, &items),
        };
        let learned: HashSet<OsString, NameHasher> = match &self.look {
            Some(look) => look
                .inspect(&mut state, &items, self.dst)
                .into_iter()
                .collect(),
            None => HashSet::default(),
        };
        let mut folders: BTreeMap<PathBuf, Holding> = BTreeMap::new();
        let listing = self.listing;
        if !scope.as_os_str().is_empty() {
            folder_of(&mut folders, scope, listing);
        }
        for item in items {
            let holding = folder_of(&mut folders, &item.rel, listing);
            let name = item.rel.into_os_string();
            if learned.contains(&name) {
                holding.learned.insert(name.clone());
            }
            if let Some(present) = holding.present.as_mut() {
                present.insert(name, item.kind);
            }
        }
        for (name, record) in state {
            let holding = match name.is_empty() {
                true => folders
                    .entry(PathBuf::new())
                    .or_insert_with(|| Holding::empty(Path::new(""), listing)),
                false => folder_of(&mut folders, Path::new(&name), listing),
            };
            holding.records.push(name, record);
        }
        for (_, mut holding) in folders {
            holding.records.sort();
            if tx.send(holding).is_err() {
                return;
            }
        }
    }
}

/// The holding of the folder `name` is in, made empty if it is not there yet.
fn folder_of<'a>(
    folders: &'a mut BTreeMap<PathBuf, Holding>,
    name: &Path,
    listing: bool,
) -> &'a mut Holding {
    let dir = name.parent().unwrap_or(Path::new(""));
    folders
        .entry(dir.to_path_buf())
        .or_insert_with(|| Holding::empty(dir, listing))
}

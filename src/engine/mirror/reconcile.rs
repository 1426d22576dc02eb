//! Full and scoped passes ([`Mirror::reconcile`] and its variants): phase 1 scans SRC
//! and plans while [`DestSide`] finds out what DST holds; phase 2 (`follow_up`) copies
//! what DST lacks and deletes what the source lacks; phase 3 (`finish_dirs`) sets the
//! folders' mode and mtime, deepest first.

use super::Mirror;
use super::guard::Adopting;
use super::prefetch::Walk;
use super::pump::pump;
use crate::engine::plan::{self, Action, Decision, Keep, PlanOptions};
use crate::engine::repair::{self, Check};
use crate::engine::scan::{self, DestItem, ScanRules, Scanned};
use crate::engine::source::{self, Source};
use crate::index::{self, Index};
use crate::model::{Entry, Kind, Meta};
use crate::model::{MirrorState, NameHasher, NameSet, Record, Stored};
use crate::output::names::{esc, io_message};
use crate::store::Reader;
use crossbeam_channel::{Sender, bounded};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The index's note of when versions were last pruned (Unix seconds) and by what rules
/// (retention and size budget), for a DST whose listing is dear.
const PRUNED_AT: &str = "versions_pruned_at";
/// How often versions of such a DST are pruned when nothing new was kept.
const PRUNE_GAP_S: i64 = 3600;

/// What the scanner found besides the actions it sent.
#[derive(Default)]
pub(super) struct ScanReport {
    /// Every name the source maps to in DST.
    pub(super) targets: NameSet,
    /// Entries the planner found current (checked against DST's names afterwards).
    pub(super) unchanged: Vec<Entry>,
    /// Every source folder walked, and whether its recorded mode/mtime differ.
    pub(super) dirs: Vec<(Entry, bool)>,
    /// Source paths that could not be read: DST keeps what it has for them.
    pub(super) unreadable: Vec<PathBuf>,
    /// FIFOs, sockets, devices.
    pub(super) skipped: u64,
    /// False if the walk was cut short: then nothing may be deleted.
    pub(super) complete: bool,
}

impl Mirror {
    /// Makes DST equal SRC at and below `scope` (all of it for an empty scope). Returns
    /// false if the scan was cut short (Ctrl-C).
    pub fn reconcile(&mut self, scope: &Path) -> bool {
        self.reconcile_checking(scope, &Check::Names)
    }

    /// As [`Mirror::reconcile`], distrusting the index about what DST holds as far as
    /// `check` says (a full pass only; a narrower scope checks names): what DST holds
    /// wrongly is written again.
    pub fn reconcile_checking(&mut self, scope: &Path, check: &Check) -> bool {
        let full = scope.as_os_str().is_empty();
        if full {
            // What failed while DST's connection was down is written again by this pass
            // (after a reconnection, or a resume).
            self.tally.summary.unreachable = 0;
        }
        let adopt = full.then(|| self.start_adopting()).flatten();
        let (known_tx, known_rx) = bounded::<Arc<MirrorState>>(1);
        let look = (full && *check != Check::Names).then(|| Look {
            check: check.clone(),
            src: self.cfg.pair.src.clone(),
            jobs: self.cfg.jobs,
            stop: self.stop.clone(),
            dry_run: self.dry_run(),
        });
        // What DST holds comes from the index or, without a usable one, from listing DST
        // in detail (which rebuilds the index). Either way the scan starts at once and
        // plans as soon as it is there; DST's names are listed meanwhile (names only
        // with an index: a no-op run stats only the source).
        let dest = if self.trusted
            && full
            && let Some(state_dir) = self.index_dir()
        {
            // A second, read-only connection loads in parallel; it sees committed rows.
            self.commit();
            // Read before DST was reached, if the index has not changed since.
            let preloaded = self.prefetch.index.take();
            DestSide::spawn(self.mode.reader(), scope, known_tx, look, move || {
                if let Some(state) = preloaded.and_then(|p| p.take(&state_dir)) {
                    return Some(state);
                }
                Index::open_untouched(&state_dir)
                    .and_then(|index| index.map(|i| i.load()).transpose())
                    .unwrap_or_else(|e| {
                        log::warn!("{e}; comparing with the destination instead");
                        None
                    })
            })
        } else if self.trusted
            && let Some(known) = self.tally.index.load_under(scope)
        {
            DestSide::spawn(self.mode.reader(), scope, known_tx, look, move || {
                Some(known)
            })
        } else {
            DestSide::spawn(self.mode.reader(), scope, known_tx, look, || None)
        };

        let mut opts = self.cfg.plan;
        opts.whole_second_mtimes = self
            .mode
            .reader()
            .is_some_and(|dst| !dst.caps().nanosecond_mtimes);
        // SRC walked while DST was reached, for the first full pass.
        let walked = self.prefetch.walk.take().filter(|_| full);
        let (mut report, known) = {
            let (rules, stop, opts) = (&self.rules, &self.stop, &opts);
            let (jobs, pair) = (self.cfg.jobs, &self.cfg.pair);
            let scanned = &self.scanned;
            pump(
                self.mode.as_ref(),
                &mut self.tally,
                jobs,
                pair,
                scanned,
                move |actions| {
                    scan_and_plan(
                        &pair.src, scope, rules, walked, known_rx, opts, actions, stop, scanned,
                    )
                },
            )
        };
        let (listing, rebuilding, learned) = dest.join();
        self.tally.summary.skipped += report.skipped;
        self.tally.summary.failed += report.unreadable.len() as u64;
        if self.stopped() {
            if let Some(exec) = self.mode.executor() {
                exec.keep_every_deletion(false);
            }
            return false;
        }
        // DST's names: as listed or, where a listing is dear, as the records say.
        let names: Vec<(&Path, Kind)> = match &listing {
            Some(items) => items.iter().map(|i| (i.rel.as_path(), i.kind)).collect(),
            None => known
                .iter()
                .filter(|(name, _)| !name.is_empty())
                .map(|(name, record)| (Path::new(name), record.kind))
                .collect(),
        };
        let (follow_up, foreign, held) = self.follow_up(&report, &names, &known, rebuilding, full);
        drop(names);
        // Digests a content check learned for files that stay as they are: recorded, so
        // `verify` can check them from now on.
        if !learned.is_empty() && self.mode.executor().is_some() {
            let unchanged: HashSet<PathBuf> = report
                .unchanged
                .iter()
                .filter_map(|e| plan::target_name(e, &self.cfg.plan))
                .collect();
            for name in learned {
                let path = PathBuf::from(&name);
                if let Some(record) = known.get(&name).filter(|_| unchanged.contains(&path)) {
                    self.tally.index.put(&path, record);
                }
            }
        }
        // A map and a listing of every name take a while to free: not on this thread.
        let unchanged = std::mem::take(&mut report.unchanged);
        drop_elsewhere((
            known,
            listing,
            unchanged,
            std::mem::take(&mut report.targets),
        ));
        if !follow_up.is_empty() {
            self.pump_all(follow_up);
        }
        if let Some(adopt) = adopt {
            self.finish_adopting(adopt, foreign, report.complete && !held);
        }
        if !self.stopped() {
            // A folder that could not be read keeps DST's mode and time: copying its
            // mode (000, say) would lock datasafe out of its own mirror.
            let unreadable: HashSet<&Path> =
                report.unreadable.iter().map(PathBuf::as_path).collect();
            let dirs = report
                .dirs
                .into_iter()
                .filter(|(e, _)| !unreadable.contains(e.rel.as_path()))
                .collect();
            self.finish_dirs(dirs);
        }
        if report.complete
            && full
            && let Some(exec) = self.mode.executor()
        {
            // The index now describes all of DST.
            self.trusted = true;
            // Pruning lists the versions folder. Where a listing is dear (a remote DST)
            // it is done when this run kept versions, else at most once an hour (the
            // finest step of any retention): a no-op pass lists nothing remote.
            let now = chrono::Utc::now().timestamp();
            let cheap = exec.store().caps().cheap_listing;
            // The last prune: when, and by what rules (new rules prune at once).
            let rules = format!("{} {:?}", self.cfg.versions, self.cfg.versions_max_size);
            let last = self
                .tally
                .index
                .0
                .as_ref()
                .and_then(|i| i.mirror_fact(PRUNED_AT))
                .and_then(|fact| {
                    let (t, by) = fact.split_once(' ')?;
                    Some((t.parse::<i64>().ok()?, by == rules))
                });
            let due = cheap
                || exec.versions_kept() > self.kept_at_prune
                || last.is_none_or(|(t, same)| !same || now - t >= PRUNE_GAP_S || t > now);
            if due {
                self.kept_at_prune = exec.versions_kept();
                self.tally.summary.versions_pruned += exec.prune_versions(self.cfg.versions);
                if let Some(max) = self.cfg.versions_max_size {
                    self.tally.summary.versions_pruned += exec.prune_to_budget(max);
                }
                if !cheap && let Some(index) = self.tally.index.0.as_mut() {
                    let _ = index.set_mirror_fact(PRUNED_AT, &format!("{now} {rules}"));
                }
            }
        }
        report.complete
    }

    /// Phase 2: copies of what DST lacks, then (after a complete scan) deletions.
    fn follow_up(
        &mut self,
        report: &ScanReport,
        listing: &[(&Path, Kind)],
        known: &MirrorState,
        rebuilding: bool,
        full: bool,
    ) -> (Vec<Action>, Vec<Action>, bool) {
        let opts = self.cfg.plan;
        let keep = Keep {
            excludes: Some(&self.cfg.excludes),
            unreadable: &report.unreadable,
        };
        let (mut actions, deletions) = std::thread::scope(|s| {
            // The deletions (a look at every name in DST) are planned on another thread
            // meanwhile; they are not used after an incomplete scan.
            let deletions = report.complete.then(|| {
                s.spawn(|| {
                    let names = listing.iter().copied();
                    plan::plan_deletions(names, &report.targets, known, &keep, &opts)
                })
            });
            let mut actions = Vec::new();
            if rebuilding {
                // `known` came from DST itself, so everything unchanged is there: record it.
                for entry in &report.unchanged {
                    if let Some(name) = plan::target_name(entry, &opts) {
                        self.tally.index.put(&name, &record_of(entry, &opts));
                    }
                }
            } else {
                // readdir gives each name's type for free: what stands in DST as another type
                // than the index says (a folder flipped to a file behind datasafe's back) is
                // written again like a missing name, without a `stat`.
                let present: HashMap<&OsStr, Kind, NameHasher> = listing
                    .iter()
                    .map(|(name, kind)| (name.as_os_str(), *kind))
                    .collect();
                // A record of a name that is neither in DST nor wanted from SRC is stale: a
                // run killed after deleting the file but before committing, or a file
                // removed from the mirror by hand. Nothing would delete it again, so forget
                // it here (verify would call it missing). Only a run that writes touches the
                // index (a dry run opened it read-only), and the root's record ("") is never
                // in DST's listing of names: it stays.
                if full && report.complete && self.mode.executor().is_some() {
                    for name in known.keys() {
                        if !name.is_empty()
                            && !present.contains_key(name.as_os_str())
                            && !report.targets.contains(name)
                        {
                            self.tally.index.remove_tree(Path::new(name));
                        }
                    }
                }
                for entry in &report.unchanged {
                    // Looked up without making the name where it is the entry's own.
                    let found = match (entry.kind, opts.stored_for(&entry.rel)) {
                        (Kind::Special, _) => continue,
                        (Kind::Dir | Kind::Symlink, _) | (Kind::File, Stored::Plain) => {
                            present.get(entry.rel.as_os_str())
                        }
                        (Kind::File, stored) => {
                            present.get(stored.name_for(&entry.rel).as_os_str())
                        }
                    };
                    if found.is_some_and(|found| *found == entry.kind) {
                        continue;
                    }
                    let Some(name) = plan::target_name(entry, &opts) else {
                        continue;
                    };
                    match found {
                        None => log::debug!("{} is missing from the destination", esc(&name)),
                        Some(found) => log::warn!(
                            "{} in the destination is {} where the index says {}; writing it again",
                            esc(&self.cfg.pair.dst.join(&name)),
                            repair::what(*found),
                            repair::what(entry.kind)
                        ),
                    }
                    actions.push(match entry.kind {
                        Kind::Dir => Action::Mkdir {
                            entry: entry.clone(),
                        },
                        Kind::Symlink => Action::Symlink {
                            entry: entry.clone(),
                        },
                        _ => Action::Copy {
                            entry: entry.clone(),
                            stored: opts.stored_for(&entry.rel),
                            was: None,
                        },
                    });
                }
            }
            let deletions = deletions.map(|planning| {
                planning
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (actions, deletions)
        });
        let unchanged = report
            .unchanged
            .iter()
            .filter(|e| e.kind != Kind::Dir)
            .count();
        let recopied = actions
            .iter()
            .filter(|a| !matches!(a, Action::Mkdir { .. }))
            .count();
        self.tally.summary.unchanged += (unchanged - recopied) as u64;
        let Some(mut deletions) = deletions else {
            log::warn!("the scan did not finish; nothing is deleted this time");
            return (actions, Vec::new(), false);
        };
        if full {
            // What is held is what this pass holds, not a sum over passes.
            self.holding = None;
            self.tally.summary.held_deletions = 0;
        }
        let mut held_back = false;
        if full && let Some(held) = self.guard_holds(report, listing, &deletions) {
            held_back = true;
            deletions.retain(|a| {
                matches!(
                    a,
                    Action::Delete {
                        superseded: true,
                        ..
                    }
                )
            });
            self.held = Some(held);
        }
        // What DST held before it became a mirror goes apart: it is always kept.
        let foreign_name = |name: &Path| match self.adopting {
            Adopting::No => false,
            Adopting::Fresh => true,
            Adopting::Unfinished => !rebuilding && !known.contains_key(name.as_os_str()),
        };
        // In a fresh DST nothing is an old form of datasafe's own (`a.txt` beside the
        // `a.txt.gz` a first `--compress` pass writes was someone else's): it is kept too.
        let fresh = self.adopting == Adopting::Fresh;
        let (foreign, deletions): (Vec<Action>, Vec<Action>) =
            deletions.into_iter().partition(|a| match a {
                Action::Delete {
                    name, superseded, ..
                } => full && foreign_name(name) && (fresh || !superseded),
                _ => false,
            });
        let foreign = foreign
            .into_iter()
            .map(|a| match a {
                Action::Delete { name, kind, .. } => Action::Delete {
                    name,
                    kind,
                    superseded: false,
                },
                other => other,
            })
            .collect();
        actions.extend(deletions);
        (actions, foreign, held_back)
    }

    /// A full pass with the deletion guard off (`datasafe release`, SIGUSR1): lets
    /// through the deletions the guard holds. Returns false if it was cut short.
    pub fn reconcile_forced(&mut self) -> bool {
        let guard = self.cfg.guard;
        self.cfg.guard.force = true;
        let done = self.reconcile(Path::new(""));
        self.cfg.guard = guard;
        done
    }

    /// Phase 3: mode and mtime of the folders walked whose record differs, and of every
    /// folder written into; deepest first.
    pub(super) fn finish_dirs(&mut self, walked: Vec<(Entry, bool)>) {
        let Some(exec) = self.mode.executor() else {
            self.tally.touched.clear();
            return;
        };
        let mut todo: BTreeMap<(std::cmp::Reverse<usize>, PathBuf), Option<Meta>> = BTreeMap::new();
        let depth = |p: &Path| std::cmp::Reverse(p.components().count());
        for (entry, differs) in walked {
            if differs || self.tally.touched.contains(&entry.rel) {
                todo.insert((depth(&entry.rel), entry.rel), Some(entry.meta));
            }
        }
        for rel in self.tally.touched.drain() {
            todo.entry((depth(&rel), rel)).or_insert(None);
        }
        let src = (!todo.is_empty())
            .then(|| Source::open(&self.cfg.pair.src).ok())
            .flatten();
        for ((_, rel), meta) in todo {
            let meta = match meta {
                Some(meta) => meta,
                None => match src.as_ref().and_then(|src| source_dir_meta(src, &rel)) {
                    Some(meta) => meta,
                    None => continue,
                },
            };
            match exec.finish_dir(&rel, &meta) {
                Ok(()) => {
                    let record = Record {
                        kind: Kind::Dir,
                        meta,
                        sha256: None,
                        stored: Stored::Plain,
                        target: None,
                        disk: None,
                    };
                    self.tally.index.put(&rel, &record);
                }
                Err(message) => {
                    self.tally.summary.failed += 1;
                    log::error!("{message}");
                    // DST itself went away (removed, unmounted): every other folder
                    // would fail the same way. One line says so; the watcher makes DST
                    // again and a reconcile sets them all.
                    if !exec.prepared() {
                        break;
                    }
                }
            }
        }
    }
}

/// The thread that finds out what DST holds while the source is scanned: it loads the
/// records (`load`, or from a detailed listing when that gives nothing), sends them to
/// the scanner, and lists DST's names. With a [`Look`], DST is listed first (in detail
/// for a `Stat` or `Content` check) and the records are checked against it before the
/// scanner gets them.
struct DestSide(std::thread::JoinHandle<(Option<Vec<DestItem>>, bool, Vec<OsString>)>);

/// A deeper look at DST than its names, for [`DestSide`].
struct Look {
    check: Check,
    src: PathBuf,
    jobs: usize,
    stop: Arc<AtomicBool>,
    /// A dry run: what is wrong is said, but nothing is written again.
    dry_run: bool,
}

impl DestSide {
    fn spawn(
        dst: Option<Arc<dyn Reader>>,
        scope: &Path,
        known: Sender<Arc<MirrorState>>,
        look: Option<Look>,
        load: impl FnOnce() -> Option<MirrorState> + Send + 'static,
    ) -> DestSide {
        let scope = scope.to_path_buf();
        let cheap = dst.as_ref().is_none_or(|d| d.caps().cheap_listing);
        // Nothing to list where DST cannot be opened (a dry run into a new folder).
        let list = move |detail: bool| match &dst {
            Some(dst) => (scan::list_store(&**dst, &scope, detail), Some(dst.clone())),
            None => (Vec::new(), None),
        };
        DestSide(std::thread::spawn(move || {
            if let Some(look) = look {
                let detail = look.check.needs_detail();
                let ((mut items, dst), loaded) = std::thread::scope(|s| {
                    let names = s.spawn(|| list(detail));
                    let loaded = load();
                    (names.join().unwrap_or_default(), loaded)
                });
                let (mut state, rebuilding) = match loaded {
                    Some(state) => (state, false),
                    None => {
                        if !detail {
                            items = list(true).0;
                        }
                        (state_of(dst.as_deref(), &items), true)
                    }
                };
                let learned = match &dst {
                    Some(dst) => repair::inspect_store(
                        &look.check,
                        &mut state,
                        &items,
                        &look.src,
                        &**dst,
                        look.jobs,
                        &look.stop,
                        look.dry_run,
                    ),
                    None => Vec::new(),
                };
                let _ = known.send(Arc::new(state));
                return (Some(items), rebuilding, learned);
            }
            if !cheap {
                // A remote DST: with records that describe it, nothing is listed (what
                // it holds is what they say); without, it is listed once, in detail.
                if let Some(state) = load() {
                    let _ = known.send(Arc::new(state));
                    return (None, false, Vec::new());
                }
                let (items, dst) = list(true);
                let _ = known.send(Arc::new(state_of(dst.as_deref(), &items)));
                return (Some(items), true, Vec::new());
            }
            std::thread::scope(|s| {
                let names = s.spawn(|| list(false).0);
                match load() {
                    Some(state) => {
                        let _ = known.send(Arc::new(state));
                        (Some(names.join().unwrap_or_default()), false, Vec::new())
                    }
                    None => {
                        let (items, dst) = list(true);
                        let _ = known.send(Arc::new(state_of(dst.as_deref(), &items)));
                        (Some(items), true, Vec::new())
                    }
                }
            })
        }))
    }

    /// DST's listing (`None` where a listing is dear and the records say what DST
    /// holds), whether the records came from it (the index is rebuilt), and the names
    /// whose digest a content check learned.
    fn join(self) -> (Option<Vec<DestItem>>, bool, Vec<OsString>) {
        self.0
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Frees `big` on another thread, so that the pass goes on meanwhile (a no-op pass of
/// 100k files otherwise spends tens of milliseconds freeing its maps and listings).
fn drop_elsewhere<T: Send + 'static>(big: T) {
    let _ = std::thread::Builder::new()
        .name("free".into())
        .spawn(move || drop(big));
}

/// The mode and mtime of a source folder (the root is followed if it is a link).
fn source_dir_meta(src: &Source, rel: &Path) -> Option<Meta> {
    let status = src.status(rel).ok().filter(|s| s.kind == Kind::Dir)?;
    Some(source::meta(&status))
}

/// Walks the source and plans every entry; runs on the scanner thread. Entries seen
/// before `known` arrives wait in a buffer, so walking overlaps loading. Returns what it
/// found and `known` itself.
#[allow(clippy::too_many_arguments)]
fn scan_and_plan(
    src: &Path,
    scope: &Path,
    rules: &ScanRules,
    walked: Option<Walk>,
    known_rx: crossbeam_channel::Receiver<Arc<MirrorState>>,
    opts: &PlanOptions,
    actions: &Sender<Action>,
    stop: &AtomicBool,
    scanned: &AtomicU64,
) -> (ScanReport, Arc<MirrorState>) {
    let mut report = ScanReport {
        complete: true,
        ..ScanReport::default()
    };
    let mut known: Option<Arc<MirrorState>> = None;
    let mut waiting: Vec<Entry> = Vec::new();
    let visit = |item| {
        if stop.load(Ordering::Relaxed) {
            report.complete = false;
            return ControlFlow::Break(());
        }
        let entry = match item {
            Scanned::Entry(entry) => entry,
            Scanned::Error { rel, error } => {
                log::error!(
                    "reading {}: {}; what the mirror holds for it is kept",
                    esc(&src.join(&rel)),
                    io_message(&error)
                );
                report.unreadable.push(rel);
                return ControlFlow::Continue(());
            }
        };
        scanned.fetch_add(1, Ordering::Relaxed);
        if known.is_none() {
            match known_rx.try_recv() {
                Ok(state) => {
                    // About one target per record (grown once, not rehashed many times).
                    report.targets.reserve(state.len());
                    known = Some(state);
                }
                Err(_) => {
                    waiting.push(entry);
                    return ControlFlow::Continue(());
                }
            }
        }
        let known = known
            .as_ref()
            .unwrap_or_else(|| unreachable!("set just above"));
        for entry in waiting.drain(..).chain(std::iter::once(entry)) {
            plan_one(src, entry, known, opts, actions, &mut report)?;
        }
        ControlFlow::Continue(())
    };
    match walked {
        Some(walked) => {
            if !walked.feed(visit) {
                // Stopped before the walk was over: it saw only part of SRC.
                report.complete = false;
            }
        }
        None => scan::walk_source_parallel(src, scope, rules, scan::walk_workers(), visit),
    }
    // The walk may end before the records arrive (a small tree, a big index).
    let known = known.unwrap_or_else(|| {
        let known = known_rx.recv().unwrap_or_default();
        report.targets.reserve(known.len());
        known
    });
    for entry in waiting {
        if !report.complete || plan_one(src, entry, &known, opts, actions, &mut report).is_break() {
            break;
        }
    }
    (report, known)
}

/// Plans one scanned entry into `report` (or an action on `actions`).
fn plan_one(
    src: &Path,
    entry: Entry,
    known: &MirrorState,
    opts: &PlanOptions,
    actions: &Sender<Action>,
    report: &mut ScanReport,
) -> ControlFlow<()> {
    if entry.rel.as_os_str().is_empty() {
        // The root: it is DST itself, so only its mode and mtime are mirrored.
        let differs = plan::dir_meta_differs(&entry, known.get(OsStr::new("")));
        report.dirs.push((entry, differs));
        return ControlFlow::Continue(());
    }
    let Some(name) = plan::target_name(&entry, opts) else {
        log::warn!(
            "skipping {}: not a regular file, folder or symlink",
            esc(&src.join(&entry.rel))
        );
        report.skipped += 1;
        return ControlFlow::Continue(());
    };
    let known_rec = known.get(name.as_os_str());
    if entry.kind == Kind::Dir {
        report
            .dirs
            .push((entry.clone(), plan::dir_meta_differs(&entry, known_rec)));
    }
    match plan::plan_entry(&entry, known_rec, opts) {
        Decision::Unchanged => report.unchanged.push(entry),
        Decision::Act(action) => {
            say_if_uncompressed(&action, opts, src);
            if actions.send(action).is_err() {
                report.complete = false;
                return ControlFlow::Break(());
            }
        }
        Decision::Skip(why) => {
            log::warn!("skipping {}: {why}", esc(&src.join(&entry.rel)));
            report.skipped += 1;
        }
    }
    report.targets.insert(name.into_os_string());
    ControlFlow::Continue(())
}

/// Says so when `action` copies a file uncompressed under `--compress` (its `NAME.gz`
/// would not fit the limit on a name): once per copy, never silently.
pub(super) fn say_if_uncompressed(action: &Action, opts: &PlanOptions, src: &Path) {
    if let Action::Copy {
        entry,
        stored: Stored::Plain,
        ..
    } = action
        && opts.compress
    {
        log::warn!(
            "{} is stored uncompressed: with .gz added, its name would pass the 255-byte \
             limit on a file name (shorten the name to have it gzipped)",
            esc(&src.join(&entry.rel))
        );
    }
}

/// The index record for a source entry stored as `opts` says.
fn record_of(entry: &Entry, opts: &PlanOptions) -> Record {
    Record {
        kind: entry.kind,
        meta: entry.meta,
        sha256: None,
        stored: if entry.kind == Kind::File {
            opts.stored_for(&entry.rel)
        } else {
            Stored::Plain
        },
        target: entry.target.clone(),
        disk: None,
    }
}

/// What DST holds, rebuilt from a detailed listing of it (nothing without a store).
fn state_of(dst: Option<&dyn Reader>, items: &[DestItem]) -> MirrorState {
    dst.map_or_else(MirrorState::default, |dst| {
        index::state_from_store(dst, items)
    })
}

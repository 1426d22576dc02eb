//! Full and scoped passes ([`Mirror::reconcile`] and its variants): phase 1 walks SRC
//! and plans each entry against what DST holds in its folder (a [`Feed`] of
//! [`Holding`]s, read on another thread in walk order), copying what DST lacks at once
//! and planning the deletions of each folder when the walk leaves it; phase 2 carries
//! the deletions out after a complete walk (the deletion guard first); phase 3
//! (`finish_dirs`) sets the folders' mode and mtime, deepest first. What a pass holds is
//! the folders on the walk's path, not a map of every name.

use super::Mirror;
use super::guard::Adopting;
use super::holdings::{Feed, Holding, Look, Records};
use super::prefetch::Walk;
use super::pump::pump;
use super::relink::is_the_file;
use crate::config::Dest;
use crate::config::filter::Excludes;
use crate::engine::plan::links::{Leaders, LinkLater, Linked};
use crate::engine::plan::{self, Action, Decision, Keep, PlanOptions};
use crate::engine::repair::{self, AttrsSet, Check};
use crate::engine::scan::{self, ScanRules, Scanned};
use crate::engine::source::Source;
use crate::index::Index;
use crate::model::{Attrs, Entry, Kept, Kind, LinkKey, Meta};
use crate::model::{NameHasher, NameSet, Record, Stored};
use crate::output::names::{esc, io_message};
use crossbeam_channel::Sender;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The index's note of when versions were last pruned (Unix seconds) and by what rules
/// (retention and size budget), for a DST whose listing is dear.
const PRUNED_AT: &str = "versions_pruned_at";
/// How often versions of such a DST are pruned when nothing new was kept.
const PRUNE_GAP_S: i64 = 3600;

/// What the scanner found besides the actions it sent.
#[derive(Default)]
pub(super) struct ScanReport {
    /// How many source entries map to a name in DST.
    pub(super) sources: u64,
    /// How many files DST holds (as listed, or as the records say).
    pub(super) mirror_files: u64,
    /// How many of them the deletions below remove (those inside deleted folders too),
    /// not counting old stored forms of current files.
    pub(super) deleting: u64,
    /// The deletions planned, each with whether the index records the name; carried
    /// out only after a complete walk.
    pub(super) deletions: Vec<(Action, bool)>,
    /// Recorded names neither in DST nor in the source: forgotten after a complete walk.
    pub(super) stale: Vec<PathBuf>,
    /// Files (and symlinks) found current and present in DST.
    pub(super) unchanged: u64,
    /// Source folders whose recorded mode, mtime, owner or attributes differ, with the
    /// source's.
    pub(super) dirs: Vec<(PathBuf, Meta, Attrs)>,
    /// Source paths that could not be read: DST keeps what it has for them.
    pub(super) unreadable: Vec<PathBuf>,
    /// FIFOs, sockets, devices.
    pub(super) skipped: u64,
    /// False if the walk was cut short: then nothing may be deleted.
    pub(super) complete: bool,
    /// Files with several names: copies of new names held back, and later names to
    /// link to the first, once the walk's copies are done (see `plan::links`).
    pub(super) links: (Vec<Action>, Vec<LinkLater>),
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
        let look = (full && *check != Check::Names).then(|| Look {
            check: check.clone(),
            src: self.cfg.pair.src.clone(),
            jobs: self.cfg.jobs,
            stop: self.stop.clone(),
            dry_run: self.dry_run(),
            attrs: self.attrs_set(),
        });
        // What DST holds comes from the index, read folder by folder as the walk needs
        // it, or, without a usable one, from DST itself (which rebuilds the index).
        let records = if self.trusted
            && full
            && let Some(state_dir) = self.index_dir()
        {
            // A second, read-only connection reads it; it sees committed rows.
            self.commit();
            match Index::open_untouched(&state_dir) {
                Ok(Some(index)) => Records::Index(index),
                Ok(None) => Records::Rebuild,
                Err(e) => {
                    log::warn!("{e}; comparing with the destination instead");
                    Records::Rebuild
                }
            }
        } else if self.trusted
            && !full
            && let Some(known) = self.tally.index.load_under(scope)
        {
            Records::Loaded(known)
        } else {
            Records::Rebuild
        };
        let rebuilding = matches!(records, Records::Rebuild);
        let feed = Feed::spawn(self.mode.reader(), scope, records, look);

        let mut opts = self.cfg.plan;
        opts.whole_second_mtimes = self
            .mode
            .reader()
            .is_some_and(|dst| !dst.caps().nanosecond_mtimes);
        // SRC walked while DST was reached, for the first full pass.
        let walked = self.prefetch.walk.take().filter(|_| full);
        let mut report = {
            let (rules, stop, opts) = (&self.rules, &self.stop, &opts);
            let (jobs, pair) = (self.cfg.jobs, &self.cfg.pair);
            let (scanned, excludes) = (&self.scanned, &self.cfg.excludes);
            pump(
                self.mode.as_ref(),
                &mut self.tally,
                jobs,
                pair,
                scanned,
                move |actions| {
                    let merge = Merge::new(pair, opts, excludes, feed, actions);
                    merge.run(scope, rules, walked, stop, scanned)
                },
            )
        };
        self.tally.summary.skipped += report.skipped;
        self.tally.summary.failed += report.unreadable.len() as u64;
        self.tally.summary.unchanged += report.unchanged;
        if !self.stopped() {
            let (mut copies, links) = std::mem::take(&mut report.links);
            if !full {
                // A new folder's names of files whose other names lie outside it.
                copies = self.link_outside(copies);
            }
            self.make_links(copies, links);
        }
        if self.stopped() {
            if let Some(exec) = self.mode.executor() {
                exec.keep_every_deletion(false);
            }
            return false;
        }
        let (deletions, foreign, held) = self.settle(&mut report, full, rebuilding);
        if !deletions.is_empty() {
            self.pump_all(deletions);
        }
        if let Some(adopt) = adopt {
            self.finish_adopting(adopt, foreign, report.complete && !held);
        }
        if !self.stopped() {
            // A folder that could not be read keeps DST's mode and time: copying its
            // mode (000, say) would lock datasafe out of its own mirror.
            let unreadable: HashSet<&Path> =
                report.unreadable.iter().map(PathBuf::as_path).collect();
            let mut dirs = std::mem::take(&mut report.dirs);
            dirs.retain(|(rel, _, _)| !unreadable.contains(rel.as_path()));
            self.finish_dirs(dirs);
        }
        self.note_owners();
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

    /// Once the walk's copies are installed (the pump above returns when every
    /// worker is done): the later names of files with several names become names of
    /// the first one's file, recorded as it is now.
    pub(super) fn make_links(&mut self, copies: Vec<Action>, links: Vec<LinkLater>) {
        if !copies.is_empty() {
            self.pump_all(copies);
        }
        if links.is_empty() || self.stopped() {
            return;
        }
        let dry_run = self.dry_run();
        let actions = links
            .into_iter()
            .map(|link| {
                let mut leader = self.tally.index.get(&link.to);
                if dry_run && leader.as_ref().is_none_or(|r| r.link != link.entry.link) {
                    // Its copy, or the record learning its key, is only planned: say
                    // what would be linked.
                    leader = Some(Record::of(&link.entry, link.stored));
                }
                link.action(leader)
            })
            .collect();
        self.pump_all(actions);
    }

    /// Phase 2, once the walk is over: the index forgets stale records (what it learned
    /// on the way, records rebuilt from DST and digests, came as [`Action::Record`]s
    /// during the walk) and the deletions go through the deletion guard. Returns the deletions to carry out, what DST held
    /// before it became a mirror (kept apart, see `guard`), and whether the guard held
    /// deletions back.
    fn settle(
        &mut self,
        report: &mut ScanReport,
        full: bool,
        rebuilding: bool,
    ) -> (Vec<Action>, Vec<Action>, bool) {
        // Only a run that writes touches the index (a dry run opened it read-only).
        let writing = self.mode.executor().is_some();
        if !report.complete {
            log::warn!("the scan did not finish; nothing is deleted this time");
            return (Vec::new(), Vec::new(), false);
        }
        // A record of a name that is neither in DST nor wanted from SRC is stale: a run
        // killed after deleting the file but before committing, or a file removed from
        // the mirror by hand. Nothing would delete it again, so it is forgotten (verify
        // would call it missing).
        if full && !rebuilding && writing {
            for name in report.stale.drain(..) {
                self.tally.index.remove_tree(&name);
            }
        }
        if full {
            // What is held is what this pass holds, not a sum over passes.
            self.holding = None;
            self.tally.summary.held_deletions = 0;
        }
        let mut deletions = std::mem::take(&mut report.deletions);
        let mut held_back = false;
        if full && let Some(held) = self.guard_holds(report) {
            held_back = true;
            deletions.retain(|(a, _)| {
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
        let foreign_name = |recorded: bool| match self.adopting {
            Adopting::No => false,
            Adopting::Fresh => true,
            Adopting::Unfinished => !rebuilding && !recorded,
        };
        // In a fresh DST nothing is an old form of datasafe's own (`a.txt` beside the
        // `a.txt.gz` a first `--compress` pass writes was someone else's): it is kept too.
        let fresh = self.adopting == Adopting::Fresh;
        let (foreign, deletions): (Vec<_>, Vec<_>) =
            deletions.into_iter().partition(|(a, recorded)| match a {
                Action::Delete { superseded, .. } => {
                    full && foreign_name(*recorded) && (fresh || !superseded)
                }
                _ => false,
            });
        let foreign = foreign
            .into_iter()
            .map(|(a, _)| match a {
                Action::Delete { name, kind, .. } => Action::Delete {
                    name,
                    kind,
                    superseded: false,
                },
                other => other,
            })
            .collect();
        let deletions = deletions.into_iter().map(|(a, _)| a).collect();
        (deletions, foreign, held_back)
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

    /// Keeps the `owners` fact true to what DST took: `refused` once it would not take
    /// one (its user is not root, a filesystem without owners), so `verify` does not
    /// hold their absence against it; `1` again once a pass gave one. The `xattrs` and
    /// `acls` facts become `refused` once DST's filesystem refused attributes.
    pub(super) fn note_owners(&mut self) {
        let Some(exec) = self.mode.executor() else {
            return;
        };
        // Attributes DST's filesystem refused: `verify` compares none.
        let kept = self.cfg.plan.kept;
        if kept.any()
            && !exec.sets_xattrs()
            && let Some(index) = self.tally.index.0.as_mut()
        {
            for (fact, on) in [("xattrs", kept.xattrs), ("acls", kept.acls)] {
                if on && index.mirror_fact(fact).as_deref() != Some("refused") {
                    let _ = index.set_mirror_fact(fact, "refused");
                }
            }
        }
        let fact = match (exec.sets_owners(), exec.owners_given() > 0) {
            _ if !self.cfg.plan.owners => return,
            (false, _) => "refused",
            (true, true) => "1",
            (true, false) => return,
        };
        if let Some(index) = self.tally.index.0.as_mut()
            && index.mirror_fact("owners").as_deref() != Some(fact)
        {
            let _ = index.set_mirror_fact("owners", fact);
        }
    }

    /// What of owners and attributes this mirror's writer set in DST (its `owners` and
    /// `xattrs` facts) and still sets: what a check of DST compares with the index.
    fn attrs_set(&self) -> AttrsSet {
        let Some(index) = self.tally.index.0.as_ref() else {
            return AttrsSet::default();
        };
        let fact = |name| index.mirror_fact(name);
        // A dry run has no executor: it says what a run would set.
        let exec = self.mode.executor();
        let owners = exec.map_or(self.cfg.plan.owners, |e| e.sets_owners());
        let xattrs = exec.is_none_or(|e| e.sets_xattrs());
        AttrsSet {
            owners: owners && fact("owners").as_deref() == Some("1"),
            kept: match xattrs && fact("xattrs").as_deref() != Some("refused") {
                true => self.cfg.plan.kept,
                false => Default::default(),
            },
        }
    }

    /// Phase 3: mode and mtime of the folders walked whose record differs, and of every
    /// folder written into (its mode and mtime read from the source again); deepest
    /// first.
    pub(super) fn finish_dirs(&mut self, walked: Vec<(PathBuf, Meta, Attrs)>) {
        let Some(exec) = self.mode.executor() else {
            self.tally.touched.clear();
            return;
        };
        // Deepest first, the walked folders (with their meta) and those only written into
        // (their meta read now) merged in one order. A first mirror has every folder in
        // both: the written-into set is thinned to what the walk lacks before either is
        // copied, so the two lists are never held twice.
        let mut walked = walked;
        walked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut extra: Vec<PathBuf> = std::mem::take(&mut self.tally.touched)
            .into_iter()
            .filter(|rel| {
                walked
                    .binary_search_by(|(p, _, _)| p.as_path().cmp(rel))
                    .is_err()
            })
            .collect();
        walked.sort_unstable_by(|a, b| deepest_first(&a.0, &b.0));
        extra.sort_unstable_by(|a, b| deepest_first(a, b));
        let src = (!extra.is_empty())
            .then(|| Source::open(&self.cfg.pair.src).ok())
            .flatten();
        let mut walked = walked.into_iter().peekable();
        let mut extra = extra.into_iter().peekable();
        let kept = self.cfg.plan.kept;
        loop {
            let take_walked = match (walked.peek(), extra.peek()) {
                (Some((a, _, _)), Some(b)) => deepest_first(a, b).is_le(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let (rel, meta) = match take_walked {
                true => walked
                    .next()
                    .map(|(rel, meta, attrs)| (rel, Some((meta, attrs)))),
                false => extra.next().map(|rel| (rel, None)),
            }
            .unwrap_or_else(|| unreachable!("peeked"));
            let (meta, attrs) = match meta {
                Some(meta) => meta,
                None => match src
                    .as_ref()
                    .and_then(|src| source_dir_meta(src, &rel, &kept))
                {
                    Some(meta) => meta,
                    None => continue,
                },
            };
            match exec.finish_dir(&rel, &meta, &attrs) {
                Ok(attrs) => {
                    let record = Record {
                        attrs,
                        ..Record::plain(Kind::Dir, meta, Stored::Plain)
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

/// Deeper folders first, then by path: the order folders get their mode and mtime.
fn deepest_first(a: &Path, b: &Path) -> std::cmp::Ordering {
    let depth = |p: &Path| std::cmp::Reverse(p.components().count());
    (depth(a), a).cmp(&(depth(b), b))
}

/// A folder the walk is in: what DST holds there and what the source has there so far.
struct Frame {
    held: Holding,
    /// The names the source's entries here map to in DST.
    targets: NameSet,
    /// The source folder could not be listed: DST keeps everything in it.
    unreadable: bool,
    /// Files DST holds below each child folder the walk did not enter (the source has
    /// no such folder, or it is left out): what deleting that folder removes.
    below: HashMap<OsString, u64, NameHasher>,
    /// With excludes, DST's names below those folders (an excluded one keeps its
    /// folders, so their other contents are deleted one by one).
    orphans: Vec<(PathBuf, Kind)>,
}

/// The scanner's side of a pass: walks SRC, plans each entry against what DST holds in
/// its folder, and plans a folder's deletions when the walk leaves it.
struct Merge<'a> {
    src: &'a Path,
    /// DST, for what is said about it.
    dst: &'a Dest,
    opts: &'a PlanOptions,
    excludes: &'a Excludes,
    feed: Feed,
    /// The folders on the walk's path, the deepest last.
    frames: Vec<Frame>,
    actions: &'a Sender<Action>,
    report: ScanReport,
    /// The first name met of each file with several names.
    leaders: Leaders,
    /// SRC, opened the first time a name's identity must be read (`still_the_file`).
    source: Option<Source>,
}

impl<'a> Merge<'a> {
    fn new(
        pair: &'a crate::config::Pair,
        opts: &'a PlanOptions,
        excludes: &'a Excludes,
        feed: Feed,
        actions: &'a Sender<Action>,
    ) -> Merge<'a> {
        Merge {
            src: &pair.src,
            dst: &pair.dst,
            opts,
            excludes,
            feed,
            frames: Vec::new(),
            actions,
            report: ScanReport {
                complete: true,
                ..ScanReport::default()
            },
            leaders: Leaders::default(),
            source: None,
        }
    }

    /// Walks `scope` (or hands over what a walk started early found) and plans it all.
    fn run(
        mut self,
        scope: &Path,
        rules: &ScanRules,
        walked: Option<Walk>,
        stop: &AtomicBool,
        scanned: &AtomicU64,
    ) -> ScanReport {
        let src = self.src;
        let visit = |item: Scanned| {
            if stop.load(Ordering::Relaxed) {
                self.report.complete = false;
                return ControlFlow::Break(());
            }
            self.item(item, scanned)
        };
        match walked {
            Some(walked) => {
                if !walked.feed(visit) {
                    // Stopped before the walk was over: it saw only part of SRC.
                    self.report.complete = false;
                }
            }
            None => scan::walk_source_parallel(src, scope, rules, scan::walk_workers(), visit),
        }
        self.report.links = std::mem::take(&mut self.leaders).finish();
        if self.report.complete {
            while !self.frames.is_empty() {
                self.close();
            }
            let Merge {
                feed,
                frames,
                report,
                ..
            } = &mut self;
            feed.drain_below(Path::new(""), |held| orphan(frames, report, false, held));
        }
        self.report
    }

    fn item(&mut self, item: Scanned, scanned: &AtomicU64) -> ControlFlow<()> {
        let mut entry = match item {
            Scanned::Entry(entry) => entry,
            Scanned::Error { rel, error } => {
                log::error!(
                    "reading {}: {}; what the mirror holds for it is kept",
                    esc(&self.src.join(&rel)),
                    io_message(&error)
                );
                // A folder entered but not listed: nothing in it is deleted.
                if let Some(top) = self.frames.last_mut()
                    && top.held.rel == rel
                {
                    top.unreadable = true;
                }
                self.report.unreadable.push(rel);
                return ControlFlow::Continue(());
            }
        };
        scanned.fetch_add(1, Ordering::Relaxed);
        if !self.opts.hard_links {
            entry.link = None;
        }
        if entry.rel.as_os_str().is_empty() {
            // The root: it is DST itself, so only its mode and mtime are mirrored.
            self.enter(Path::new(""));
            let frame = self
                .frames
                .last()
                .unwrap_or_else(|| unreachable!("entered"));
            let root = frame.held.records.get(&OsString::new());
            if plan::dir_meta_differs(&entry, root, self.opts) {
                self.report.dirs.push((entry.rel, entry.meta, entry.attrs));
            }
            return ControlFlow::Continue(());
        }
        // Leave the folders this entry is not in (walk order: depth first).
        let parent = entry.rel.parent().unwrap_or(Path::new(""));
        while self.frames.last().is_some_and(|f| f.held.rel != parent) {
            self.close();
        }
        if self.frames.is_empty() {
            // A narrower pass: the folder above its scope holds only the scope.
            self.enter(parent);
        }
        let folder = (entry.kind == Kind::Dir).then(|| entry.rel.clone());
        self.plan(entry)?;
        if let Some(folder) = folder {
            self.enter(&folder);
        }
        ControlFlow::Continue(())
    }

    /// Plans one entry against what DST holds in its folder (the deepest frame).
    fn plan(&mut self, entry: Entry) -> ControlFlow<()> {
        let (opts, src) = (self.opts, self.src);
        let Some(name) = plan::target_name(&entry, opts) else {
            log::warn!(
                "skipping {}: not a regular file, folder or symlink",
                esc(&src.join(&entry.rel))
            );
            self.report.skipped += 1;
            return ControlFlow::Continue(());
        };
        let name = name.into_os_string();
        let rebuilding = self.feed.rebuilding;
        let Some(frame) = self.frames.last_mut() else {
            unreachable!("entered above")
        };
        let report = &mut self.report;
        report.sources += 1;
        let known = frame.held.records.get(&name);
        let unchanged_before = report.unchanged;
        if entry.kind == Kind::Dir && plan::dir_meta_differs(&entry, known, opts) {
            report
                .dirs
                .push((entry.rel.clone(), entry.meta, entry.attrs.clone()));
        }
        let mut decision = plan::plan_entry(&entry, known, opts);
        if let Some(key) = plan::left_alone(&entry, known, opts)
            && let Some(known) = known
            && still_the_file(&mut self.source, src, &entry.rel, key)
        {
            decision = plan::plan_survivor(&entry, known, opts);
        }
        let action = match decision {
            Decision::Unchanged if rebuilding => {
                // What DST holds is what the records were made of: record it.
                report.unchanged += u64::from(entry.kind != Kind::Dir);
                Some(Action::Record {
                    name: PathBuf::from(&name),
                    record: record_of(&entry, opts),
                })
            }
            Decision::Unchanged => {
                let found = frame.held.kind_of(&name);
                if found == Some(entry.kind) {
                    report.unchanged += u64::from(entry.kind != Kind::Dir);
                    // A digest a content check learned for a file that stays as it is.
                    known
                        .filter(|_| frame.held.learned.contains(&name))
                        .map(|record| Action::Record {
                            name: PathBuf::from(&name),
                            record: record.clone(),
                        })
                } else {
                    // readdir gives each name's type for free: what stands in DST as
                    // another type than the index says (a folder flipped to a file
                    // behind datasafe's back) is written again like a missing name.
                    match found {
                        None => {
                            log::debug!("{} is missing from the destination", esc(Path::new(&name)))
                        }
                        Some(found) => log::warn!(
                            "{} in the destination is {} where the index says {}; writing it again",
                            esc(&self.dst.join(Path::new(&name))),
                            repair::what(found),
                            repair::what(entry.kind)
                        ),
                    }
                    Some(rewrite(&entry, opts))
                }
            }
            Decision::Act(action @ Action::Record { .. }) => {
                // A change of link membership alone: DST's file stays as it is.
                report.unchanged += 1;
                Some(action)
            }
            Decision::Act(action) => {
                say_if_uncompressed(&action, opts, src);
                Some(action)
            }
            Decision::Skip(why) => {
                log::warn!("skipping {}: {why}", esc(&src.join(&entry.rel)));
                report.skipped += 1;
                None
            }
        };
        let action = match self
            .leaders
            .plan(&entry, Path::new(&name), known, action, opts)
        {
            Linked::Now(action) => action,
            Linked::Held => {
                // Not unchanged after all: written once the walk's copies are done.
                report.unchanged = unchanged_before;
                None
            }
        };
        frame.targets.insert(name);
        if let Some(action) = action
            && self.actions.send(action).is_err()
        {
            self.report.complete = false;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// The walk goes into the folder `rel`: what DST holds there becomes the deepest
    /// frame (the folders before it, which the source lacks, are counted on the way).
    fn enter(&mut self, rel: &Path) {
        let gather = !self.excludes.is_empty();
        let Merge {
            feed,
            frames,
            report,
            ..
        } = self;
        let held = feed.take(rel, |held| orphan(frames, report, gather, held));
        self.frames.push(Frame {
            held,
            targets: NameSet::default(),
            unreadable: false,
            below: HashMap::default(),
            orphans: Vec::new(),
        });
    }

    /// The walk leaves the deepest folder: what DST holds there that the source does not
    /// have is deleted (after the walk), and records of names in neither are stale.
    fn close(&mut self) {
        let gather = !self.excludes.is_empty();
        let Merge {
            feed,
            frames,
            report,
            opts,
            excludes,
            ..
        } = self;
        let Some(rel) = frames.last().map(|f| f.held.rel.clone()) else {
            return;
        };
        feed.drain_below(&rel, |held| orphan(frames, report, gather, held));
        let Some(frame) = frames.pop() else { return };
        report.mirror_files += frame.held.files();
        if frame.unreadable {
            return;
        }
        let mut listing = frame.held.names();
        listing.extend(frame.orphans.iter().map(|(n, k)| (n.as_path(), *k)));
        let keep = Keep {
            excludes: Some(excludes),
            unreadable: &report.unreadable,
        };
        let deletions = plan::plan_deletions(
            listing.iter().copied(),
            &frame.targets,
            &frame.held.records,
            &keep,
            opts,
        );
        // The files each deletion removes, for the guard.
        let gone: HashSet<&Path> = deletions
            .iter()
            .filter_map(|a| match a {
                Action::Delete {
                    name,
                    superseded: false,
                    ..
                } => Some(name.as_path()),
                _ => None,
            })
            .collect();
        report.deleting += listing
            .iter()
            .filter(|(name, kind)| *kind != Kind::Dir && name.ancestors().any(|a| gone.contains(a)))
            .count() as u64;
        if !gather {
            report.deleting += gone
                .iter()
                .filter_map(|name| frame.below.get(name.as_os_str()))
                .sum::<u64>();
        }
        drop(gone);
        for action in deletions {
            let recorded = frame
                .held
                .records
                .contains_key(action.dest_name().as_os_str());
            report.deletions.push((action, recorded));
        }
        if let (Some(present), true) = (&frame.held.present, frame.held.listed) {
            let stale = frame
                .held
                .records
                .keys()
                .chain(frame.held.below.iter())
                .filter(|n| {
                    !n.is_empty() && !present.contains_key(*n) && !frame.targets.contains(*n)
                });
            report.stale.extend(stale.map(PathBuf::from));
        }
    }
}

/// A folder DST holds (or the records hold) that the walk did not enter: counted for the
/// guard, and, with excludes (`gather`), its names kept for the deletions of the
/// nearest folder the walk is in.
fn orphan(frames: &mut [Frame], report: &mut ScanReport, gather: bool, held: Holding) {
    let files = held.files();
    report.mirror_files += files;
    let Some(frame) = frames
        .iter_mut()
        .rev()
        .find(|f| held.rel.starts_with(&f.held.rel))
    else {
        return;
    };
    let Some(Component::Normal(first)) = held
        .rel
        .strip_prefix(&frame.held.rel)
        .ok()
        .and_then(|rest| rest.components().next())
    else {
        return;
    };
    let child = frame.held.rel.join(first).into_os_string();
    *frame.below.entry(child).or_default() += files;
    if gather {
        frame
            .orphans
            .extend(held.names().into_iter().map(|(n, k)| (n.to_path_buf(), k)));
    }
}

/// The action that writes an unchanged entry again where DST lacks it or holds another
/// type there.
fn rewrite(entry: &Entry, opts: &PlanOptions) -> Action {
    match entry.kind {
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
    }
}

/// The mode, mtime, owner and kept attributes of a source folder (the root is
/// followed if it is a link).
fn source_dir_meta(src: &Source, rel: &Path, kept: &Kept) -> Option<(Meta, Attrs)> {
    let entry = src.entry(rel, kept).ok().filter(|e| e.kind == Kind::Dir)?;
    Some((entry.meta, entry.attrs))
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
/// True if SRC's `rel` is the source file `key` (its device and inode): a name whose
/// other names went ([`plan::left_alone`]), not one replaced by a separate file. SRC
/// is opened on first use into `source`; a name that cannot be read is not.
fn still_the_file(source: &mut Option<Source>, src: &Path, rel: &Path, key: LinkKey) -> bool {
    if source.is_none() {
        *source = Source::open(src).ok();
    }
    source
        .as_ref()
        .is_some_and(|source| is_the_file(source, rel, key))
}

fn record_of(entry: &Entry, opts: &PlanOptions) -> Record {
    let stored = if entry.kind == Kind::File {
        opts.stored_for(&entry.rel)
    } else {
        Stored::Plain
    };
    Record::of(entry, stored)
}

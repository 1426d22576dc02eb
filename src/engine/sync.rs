//! The mirror engine every command drives: scan → plan → exec → index. A [`Mirror`] is
//! one pair (SRC, DST) with its executor and index; it can reconcile all of it or one
//! folder ([`Mirror::reconcile`]), or re-check single paths ([`Mirror::apply`], for
//! `watch`). `sync` is one full reconcile of each pair (its runner is `cli::sync`).
//!
//! A reconcile has three phases:
//! 1. A scanner thread walks SRC (or the folder in scope), plans each entry against what
//!    the mirror holds and feeds a bounded channel; `jobs` workers carry the actions out
//!    while the scan goes on; this thread owns the index and records each outcome. In
//!    parallel, DST's names are listed (with an index, names only: a no-op run stats only
//!    the source).
//! 2. Once the scan is complete, what DST lacks (a file deleted from the mirror behind
//!    the index's back) is copied and what the source lacks is deleted. An interrupted or
//!    partial scan deletes nothing.
//! 3. Folders get their mode and mtime last, deepest first, since writing into a folder
//!    changes its mtime.
//!
//! The index is committed every few seconds and at the end, each time after one
//! filesystem sync, so it never claims a file the disk might not have.

use crate::config::{Config, Pair};
use crate::engine::exec::{Done, Executor, Outcome, PrepareError, spawn_workers};
use crate::engine::plan::{self, Action, Decision, Held, Keep, PlanOptions};
use crate::engine::repair::{self, Check};
use crate::engine::scan::{self, DestItem, ScanRules, Scanned};
use crate::engine::source::{self, Source};
use crate::index::{self, Index};
use crate::model::{Entry, Kind, Meta};
use crate::model::{MirrorState, Record, Stored};
use crate::output::names::{count_of, esc, io_message};
use crate::output::report::{Progress, Summary};
use crate::store::layout::{self, STATE_DIR};
use crate::store::local::Local;
use crate::store::{Reader, Store};
use crate::watch::Hint;
use chrono::Timelike;
use crossbeam_channel::{Sender, bounded};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the index is committed while work goes on.
const COMMIT_EVERY: Duration = Duration::from_secs(2);
/// Capacity of the channel between the scanner and the workers.
const QUEUE: usize = 256;

/// What happened to a batch of hints.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The hints were carried out.
    Done,
    /// SRC's root is gone (unmounted, removed): nothing was done, nothing deleted.
    SourceGone,
}

/// Where a mirror's actions go (see [`pump`]): the executor carries them out, a dry run
/// records them as planned, a DST that cannot be written counts each as failed. The
/// engine hands every action over the same way, whichever it is.
trait Carrier: Send + Sync {
    /// Takes every action from `actions` until the channel closes, recording what
    /// became of each in `tally`. `context` is `(jobs, pair, scanned)`: how many workers
    /// it may run on `scope`, the pair (for log lines), the scanner's count (for the
    /// progress line).
    fn carry<'scope, 'env>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        actions: crossbeam_channel::Receiver<Action>,
        tally: &mut Tally,
        context: (usize, &Pair, &AtomicU64),
    );

    /// The executor, when actions are carried out (for what only a writing mirror does:
    /// versions, pruning, folder metadata, the index's commits).
    fn executor(&self) -> Option<&Executor> {
        None
    }
}

impl Carrier for Executor {
    fn carry<'scope, 'env>(
        &'env self,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        actions: crossbeam_channel::Receiver<Action>,
        tally: &mut Tally,
        (jobs, pair, scanned): (usize, &Pair, &AtomicU64),
    ) {
        let (out_tx, out_rx) = bounded::<Outcome>(QUEUE);
        spawn_workers(scope, self, jobs, &actions, &out_tx);
        drop((out_tx, actions));
        for outcome in out_rx {
            tally.absorb(outcome, self, pair, scanned);
        }
    }

    fn executor(&self) -> Option<&Executor> {
        Some(self)
    }
}

/// `--dry-run`: each action is recorded as planned (and printed), nothing is written.
struct DryRun;

impl Carrier for DryRun {
    fn carry<'scope, 'env>(
        &'env self,
        _scope: &'scope std::thread::Scope<'scope, 'env>,
        actions: crossbeam_channel::Receiver<Action>,
        tally: &mut Tally,
        _: (usize, &Pair, &AtomicU64),
    ) {
        for action in actions {
            let replaces =
                matches!(action, Action::Copy { .. }) && tally.replaces_file(&action.dest_name());
            tally.summary.record_planned(&action, replaces);
        }
    }
}

/// DST cannot be written: each action counts as failed (one error said why).
struct Blocked;

impl Carrier for Blocked {
    fn carry<'scope, 'env>(
        &'env self,
        _scope: &'scope std::thread::Scope<'scope, 'env>,
        actions: crossbeam_channel::Receiver<Action>,
        tally: &mut Tally,
        _: (usize, &Pair, &AtomicU64),
    ) {
        for _ in actions {
            tally.summary.failed += 1;
        }
    }
}

/// One pair, open for mirroring.
pub struct Mirror {
    cfg: Config,
    stop: Arc<AtomicBool>,
    mode: Box<dyn Carrier>,
    rules: ScanRules,
    /// True once the index describes DST; until then a reconcile lists DST in detail.
    trusted: bool,
    /// Entries the scanner has seen, for the progress line.
    scanned: Arc<AtomicU64>,
    tally: Tally,
    /// Why the last full pass held its deletions back.
    held: Option<Held>,
    /// What the last full pass held back and why (`None` once a pass holds nothing).
    holding: Option<(Held, u64)>,
    /// DST was lost and opening it again failed (see [`Mirror::dest_lost`]).
    lost: bool,
    /// DST has not yet had a complete pass as a mirror: what it held before (see
    /// [`Adopting`]) is kept whatever the retention says.
    adopting: Adopting,
    /// A watcher runs this mirror: held deletions are let through with `datasafe
    /// release`, not by running again with `--force`.
    watched: bool,
}

/// How far DST is from being a datasafe mirror. What a folder held before it became a
/// mirror was never datasafe's: it is removed or replaced as the source says, but
/// always kept as versions, and the run says so once, loudly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Adopting {
    /// A mirror (or not writing).
    No,
    /// DST had no `.datasafe` folder when it was opened: everything it holds is
    /// someone else's.
    Fresh,
    /// A first pass began but did not complete (the index says `adopted = 0`): names
    /// the index does not know are someone else's.
    Unfinished,
}

/// What the engine thread accumulates from outcomes: counts, the index, touched folders.
struct Tally {
    index: IndexWriter,
    summary: Summary,
    /// DST folders written into (their mode and mtime must be set again).
    touched: HashSet<PathBuf>,
    progress: Progress,
    started: Instant,
}

/// What the scanner found besides the actions it sent.
#[derive(Default)]
struct ScanReport {
    /// Every name the source maps to in DST.
    targets: HashSet<OsString>,
    /// Entries the planner found current (checked against DST's names afterwards).
    unchanged: Vec<Entry>,
    /// Every source folder walked, and whether its recorded mode/mtime differ.
    dirs: Vec<(Entry, bool)>,
    /// Source paths that could not be read: DST keeps what it has for them.
    unreadable: Vec<PathBuf>,
    /// FIFOs, sockets, devices.
    skipped: u64,
    /// False if the walk was cut short: then nothing may be deleted.
    complete: bool,
}

impl Mirror {
    /// Opens the pair: prepares DST for writing (or not, for a dry run), takes its lock
    /// and opens its index. An unwritable DST is logged and the mirror then runs in a
    /// mode that writes nothing (`watch` tries again later); another datasafe holding the
    /// lock is an error.
    pub fn open(
        cfg: &Config,
        stop: &Arc<AtomicBool>,
        show_progress: bool,
    ) -> Result<Mirror, String> {
        Mirror::open_with(cfg, stop, show_progress, false)
    }

    /// As [`Mirror::open`], but an unwritable DST is an error too (for `sync`: a run
    /// that can write nothing should say so once, not fail every file).
    pub fn open_to_write(
        cfg: &Config,
        stop: &Arc<AtomicBool>,
        show_progress: bool,
    ) -> Result<Mirror, String> {
        Mirror::open_with(cfg, stop, show_progress, true)
    }

    fn open_with(
        cfg: &Config,
        stop: &Arc<AtomicBool>,
        show_progress: bool,
        refuse_unwritable: bool,
    ) -> Result<Mirror, String> {
        let pair = &cfg.pair;
        if let Some(rel) = &pair.dst_in_src {
            log::info!(
                "destination is inside the source; leaving {} out of the scan",
                esc(rel)
            );
        }
        let state_dir = pair.dst_canonical.join(STATE_DIR);
        let mut adopting = Adopting::No;
        let (mode, index, trusted) = if cfg.output.dry_run {
            let (index, trusted) = read_index(&state_dir);
            (Box::new(DryRun) as Box<dyn Carrier>, index, trusted)
        } else {
            match open_for_writing(cfg, stop) {
                Ok((exec, index, trusted, adopt)) => {
                    adopting = adopt;
                    (Box::new(exec) as Box<dyn Carrier>, index, trusted)
                }
                Err(PrepareError::Locked(message)) => return Err(message),
                Err(PrepareError::Unwritable(message)) if refuse_unwritable => {
                    return Err(message);
                }
                Err(PrepareError::Unwritable(message)) => {
                    log::error!("{message}");
                    let (index, trusted) = read_index(&state_dir);
                    (Box::new(Blocked) as Box<dyn Carrier>, index, trusted)
                }
            }
        };
        let mut skip: Vec<PathBuf> = pair.dst_in_src.iter().cloned().collect();
        // Our own log files inside SRC would otherwise be copied after every line.
        for log_file in [&cfg.output.log_file, &cfg.output.error_log]
            .into_iter()
            .flatten()
        {
            if let Some(rel) = std::path::absolute(log_file)
                .ok()
                .and_then(|p| p.strip_prefix(&pair.src).ok().map(Path::to_path_buf))
            {
                skip.push(rel);
            }
        }
        let state_in_src = Source::open(&pair.src).and_then(|s| s.status(Path::new(STATE_DIR)));
        if state_in_src.is_ok() {
            // Said once per run (and once per `watch` start): DST's state folder has that
            // name, so a source's own (SRC is itself a mirror) cannot be mirrored.
            let path = pair.src.join(STATE_DIR);
            log::warn!(
                "{} is left out: a source's top-level {STATE_DIR} folder is never mirrored, as \
                 the mirror keeps its own state under that name; to keep a copy of it, mirror \
                 it on its own (datasafe sync {} ANOTHER_FOLDER)",
                esc(&path),
                shell_word(&esc(&path).to_string())
            );
        }
        Ok(Mirror {
            rules: ScanRules {
                excludes: cfg.excludes.clone(),
                skip,
            },
            cfg: cfg.clone(),
            stop: stop.clone(),
            mode,
            trusted,
            scanned: Arc::new(AtomicU64::new(0)),
            tally: Tally {
                index: IndexWriter(index),
                summary: Summary {
                    dry_run: cfg.output.dry_run,
                    ..Summary::default()
                },
                touched: HashSet::new(),
                progress: Progress::start(show_progress),
                started: Instant::now(),
            },
            held: None,
            holding: None,
            lost: false,
            adopting,
            watched: false,
        })
    }

    /// True if DST (or its state folder) was removed since the mirror was opened, or
    /// opening it again failed: nothing can be written until [`Mirror::reopen`]
    /// succeeds. The lock, the index and the temp folder went with it, so every write
    /// would fail on its own.
    pub fn dest_lost(&self) -> bool {
        self.lost || self.mode.executor().is_some_and(|exec| !exec.prepared())
    }

    /// Opens DST again after it was lost: creates it and its state folder, takes the
    /// lock and opens the index (a new one: the next reconcile compares SRC with DST in
    /// detail), keeping the counts. On error the mirror writes nothing until a later
    /// call succeeds.
    pub fn reopen(&mut self) -> Result<(), String> {
        // The old lock and index live on in unlinked files: let them go first.
        if let Some(exec) = self.mode.executor() {
            self.tally.summary.versions_kept += exec.versions_kept();
            self.tally.summary.versions_pruned += exec.pruned_for_room();
        }
        self.mode = Box::new(Blocked);
        self.tally.index = IndexWriter(None);
        self.lost = true;
        let err = match open_for_writing(&self.cfg, &self.stop) {
            Ok((exec, index, trusted, adopting)) => {
                self.mode = Box::new(exec);
                self.tally.index = IndexWriter(index);
                self.trusted = trusted;
                self.lost = false;
                self.adopting = adopting;
                return Ok(());
            }
            Err(PrepareError::Locked(message) | PrepareError::Unwritable(message)) => message,
        };
        Err(err)
    }

    /// The pair this mirror serves.
    pub fn pair(&self) -> &Pair {
        &self.cfg.pair
    }

    /// The counts so far.
    pub fn summary(&self) -> &Summary {
        &self.tally.summary
    }

    /// The counts so far (with the time since the mirror was opened), to finish and
    /// print.
    pub fn into_summary(self) -> Summary {
        let mut summary = self.tally.summary;
        if let Some(exec) = self.mode.executor() {
            summary.versions_kept += exec.versions_kept();
            summary.versions_pruned += exec.pruned_for_room();
        }
        summary.duration_s = self.tally.started.elapsed().as_secs_f64();
        summary
    }

    /// True if SRC's root is there (a vanished root pauses the pair, never empties DST).
    pub fn source_present(&self) -> bool {
        self.cfg.pair.src.is_dir()
    }

    /// True if `name` in DST is a real folder, reached without passing a symlink
    /// (through the executor's store; without one, DST is opened to look).
    fn dest_is_dir(&self, name: &Path) -> bool {
        let found = match self.mode.executor() {
            Some(exec) => exec.store().stat(name),
            None => Local::open(&self.cfg.pair.dst_canonical).and_then(|dst| dst.stat(name)),
        };
        matches!(found, Ok(Some(s)) if s.kind == Kind::Dir)
    }

    /// Makes DST's writes durable and commits the index.
    pub fn commit(&mut self) {
        self.tally.index.commit(self.mode.executor());
    }

    /// Commits if changes have waited long enough.
    pub fn commit_if_due(&mut self) {
        if self.tally.index.due() {
            self.commit();
        }
    }

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
        let adopt = full.then(|| self.start_adopting()).flatten();
        let (known_tx, known_rx) = bounded::<MirrorState>(1);
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
        let dst = self.cfg.pair.dst_canonical.clone();
        let dst = dst.as_path();
        let dest = if self.trusted && full {
            // A second, read-only connection loads in parallel; it sees committed rows.
            self.commit();
            let state_dir = dst.join(STATE_DIR);
            DestSide::spawn(dst, scope, known_tx, look, move || {
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
            DestSide::spawn(dst, scope, known_tx, look, move || Some(known))
        } else {
            DestSide::spawn(dst, scope, known_tx, look, || None)
        };

        let (report, known) = {
            let (rules, stop, opts) = (&self.rules, &self.stop, &self.cfg.plan);
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
                        &pair.src, scope, rules, known_rx, opts, actions, stop, scanned,
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
        let (follow_up, foreign, held) =
            self.follow_up(&report, &listing, &known, rebuilding, full);
        // Digests a content check learned for files that stay as they are: recorded, so
        // `verify` can check them from now on.
        let unchanged: HashSet<PathBuf> = report
            .unchanged
            .iter()
            .filter_map(|e| plan::target_name(e, &self.cfg.plan))
            .collect();
        for name in learned
            .into_iter()
            .filter(|_| self.mode.executor().is_some())
        {
            let path = PathBuf::from(&name);
            if let Some(record) = known.get(&name).filter(|_| unchanged.contains(&path)) {
                self.tally.index.put(&path, record);
            }
        }
        drop((known, listing));
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
            self.tally.summary.versions_pruned += exec.prune_versions(self.cfg.versions);
            if let Some(max) = self.cfg.versions_max_size {
                self.tally.summary.versions_pruned += exec.prune_to_budget(max);
            }
        }
        report.complete
    }

    /// Re-checks the paths `hints` name against the source as it is now and makes DST
    /// match: copies, deletes, renames, walks folders that appeared.
    pub fn apply(&mut self, hints: Vec<Hint>) -> Applied {
        if !self.source_present() {
            return Applied::SourceGone;
        }
        // Every path below is looked at from SRC's root handle, never re-resolved.
        let Ok(src) = Source::open(&self.cfg.pair.src) else {
            return Applied::SourceGone;
        };
        let (renames, changes) = coalesce(hints);
        let mut changes = changes;
        for (from, to) in renames {
            if let Some(action) = self.plan_rename(&src, &from, &to) {
                self.pump_all(vec![action]);
            }
            // Whatever the rename did, both paths are re-checked: that cleans up after
            // a failed rename and catches a change made together with it.
            let to_is_dir = src.status(&to).is_ok_and(|s| s.kind == Kind::Dir);
            changes.entry(from).or_insert(false);
            *changes.entry(to).or_insert(false) |= to_is_dir;
        }
        let changes = drop_covered(changes);
        let mut actions = Vec::new();
        let mut walks = Vec::new();
        for (rel, walk) in changes {
            self.plan_path(&src, &rel, walk, &mut actions, &mut walks);
        }
        // Deletions that arrive as events are carried out even when they leave SRC
        // empty: the user deleted those files one by one, in a source the caller has
        // checked is still the same folder (the empty-source and mass-delete guard is
        // for full passes, which cannot tell an emptied folder from an unmounted one).
        if !actions.is_empty() {
            self.pump_all(actions);
        }
        for scope in walks {
            if self.stopped() {
                break;
            }
            self.reconcile(&scope);
        }
        if !self.stopped() {
            self.finish_dirs(Vec::new());
        }
        Applied::Done
    }

    /// True if SRC holds nothing that is mirrored (what it holds is all left out).
    pub fn source_is_empty(&self) -> bool {
        let entries = Source::open(&self.cfg.pair.src).and_then(|s| s.root_dir().entries());
        let Ok(entries) = entries else {
            return false;
        };
        !entries
            .iter()
            .any(|(name, _)| !self.rules.covers(Path::new(name)))
    }

    /// Plans what one path needs, looking at it as it is now.
    fn plan_path(
        &mut self,
        src: &Source,
        rel: &Path,
        walk: bool,
        actions: &mut Vec<Action>,
        walks: &mut Vec<PathBuf>,
    ) {
        if rel.as_os_str().is_empty() {
            if walk {
                walks.push(PathBuf::new());
            } else {
                self.tally.touched.insert(PathBuf::new());
            }
            return;
        }
        if self.rules.covers(rel) {
            return;
        }
        // Whatever happened at `rel` may have changed its folder's mtime (a file made and
        // removed within the debounce leaves nothing else to do): refresh the folder's
        // metadata if DST has it.
        let parent = rel.parent().unwrap_or(Path::new(""));
        if self.dest_is_dir(parent) {
            self.tally.touched.insert(parent.to_path_buf());
        }
        let path = src.path(rel);
        // A folder on the way that is a symlink now (NotADirectory) means `rel` is gone
        // from SRC: what the link leads to is never read.
        let entry = match src.entry(rel) {
            Ok(entry) => entry,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                self.plan_gone(rel, actions);
                return;
            }
            Err(e) => {
                self.tally.summary.failed += 1;
                log::error!("reading {}: {}", esc(&path), io_message(&e));
                return;
            }
        };
        let Some(name) = plan::target_name(&entry, &self.cfg.plan) else {
            self.tally.summary.skipped += 1;
            log::warn!(
                "skipping {}: not a regular file, folder or symlink",
                esc(&path)
            );
            return;
        };
        // Stored under another name before (kind or form changed): that name goes. Only
        // a file stored in the other form is a conversion; a file that became a folder
        // or a link (`f.gz` → `f/` under --compress) is a deletion, logged, counted and
        // kept as a version, and left alone by --no-delete, as in a full pass.
        for (old, record) in self.stored_names(rel) {
            if old != name {
                let converted = record.kind == entry.kind;
                if converted || self.cfg.plan.delete {
                    actions.push(Action::Delete {
                        name: old,
                        kind: record.kind,
                        superseded: converted,
                    });
                }
            }
        }
        let known = self.tally.index.get(&name);
        if entry.kind == Kind::Dir {
            if walk || !known.as_ref().is_some_and(|r| r.kind == Kind::Dir) {
                walks.push(entry.rel);
            } else {
                // A folder's own metadata changed.
                self.tally.touched.insert(entry.rel);
            }
            return;
        }
        match plan::plan_entry(&entry, known.as_ref(), &self.cfg.plan) {
            Decision::Unchanged => {
                // An event said this file changed, yet size and mtime match: two writes
                // within one kernel timestamp tick look like that. For a recent mtime,
                // compare content rather than trust the clock.
                if let Some(known) = known.filter(|_| entry.kind == Kind::File)
                    && recently(entry.meta.mtime)
                {
                    actions.push(Action::Compare {
                        stored: self.cfg.plan.stored_for(&entry.rel),
                        entry,
                        known,
                    });
                }
            }
            Decision::Act(action) => {
                say_if_uncompressed(&action, &self.cfg.plan, &self.cfg.pair.src);
                actions.push(action);
            }
            Decision::Skip(why) => {
                self.tally.summary.skipped += 1;
                log::warn!("skipping {}: {why}", esc(&path));
            }
        }
    }

    /// Plans the deletions for source path `rel`, which is gone: by the same rule as a
    /// full pass (`plan::plan_deletions` over what DST holds there, with nothing wanted),
    /// so excluded names and the folders holding them stay, and with `delete` off
    /// nothing goes.
    fn plan_gone(&mut self, rel: &Path, actions: &mut Vec<Action>) {
        let mut listing: Vec<(PathBuf, Kind)> = Vec::new();
        for (name, record) in self.stored_names(rel) {
            let items = match record.kind {
                Kind::Dir => scan::list_dest(&self.cfg.pair.dst_canonical, &name, false),
                _ => Vec::new(),
            };
            if items.is_empty() {
                // A file, or a folder DST no longer shows: its record goes either way.
                listing.push((name, record.kind));
            } else {
                listing.extend(items.into_iter().map(|i| (i.rel, i.kind)));
            }
        }
        if listing.is_empty() {
            return;
        }
        let keep = Keep {
            excludes: Some(&self.cfg.excludes),
            unreadable: &[],
        };
        let names = listing.iter().map(|(n, k)| (n.as_path(), *k));
        actions.extend(plan::plan_deletions(
            names,
            &HashSet::new(),
            &MirrorState::default(),
            &keep,
            &self.cfg.plan,
        ));
    }

    /// The names DST holds for source path `rel`, per the index (plain and `.gz`).
    fn stored_names(&mut self, rel: &Path) -> Vec<(PathBuf, Record)> {
        [Stored::Plain, Stored::Gzip]
            .into_iter()
            .filter_map(|form| {
                let name = form.name_for(rel);
                let record = self.tally.index.get(&name)?;
                let is_file_form = record.kind == Kind::File && record.stored == form;
                (form == Stored::Plain && record.kind != Kind::File || is_file_form)
                    .then_some((name, record))
            })
            .collect()
    }

    /// A rename inside SRC becomes a rename inside DST when DST holds the old name as
    /// the index says and the source really moved (old name gone, new one there).
    /// Without `delete`, the old name stays: the new one is copied like any new path.
    fn plan_rename(&mut self, src: &Source, from: &Path, to: &Path) -> Option<Action> {
        if !self.cfg.plan.delete {
            return None;
        }
        let empty = |p: &Path| p.as_os_str().is_empty();
        if empty(from) || empty(to) || self.rules.covers(from) || self.rules.covers(to) {
            return None;
        }
        if src.status(from).is_ok() {
            return None;
        }
        let kind = src.status(to).ok()?.kind;
        let (from_name, to_name) = match kind {
            Kind::File => {
                let plan = &self.cfg.plan;
                let (from_form, to_form) = (plan.stored_for(from), plan.stored_for(to));
                (from_form.name_for(from), to_form.name_for(to))
            }
            Kind::Dir | Kind::Symlink => (from.to_path_buf(), to.to_path_buf()),
            Kind::Special => return None,
        };
        let record = self.tally.index.get(&from_name)?;
        if kind == Kind::Dir && !self.rename_keeps_excluded(&from_name, &to_name) {
            return None;
        }
        let same_form = kind != Kind::File
            || record.stored == self.cfg.plan.stored_for(from)
                && record.stored == self.cfg.plan.stored_for(to);
        (record.kind == kind && same_form).then_some(Action::Rename {
            from: from_name,
            to: to_name,
            kind,
        })
    }

    /// False if renaming DST's folder `from` to `to` would carry an excluded name inside
    /// it to a name no longer excluded (an anchored `/from/keep`), which the next pass
    /// would delete: then the folder is copied anew and the old one deleted by the rule
    /// that keeps excluded names, as `sync` does.
    fn rename_keeps_excluded(&self, from: &Path, to: &Path) -> bool {
        if self.cfg.excludes.is_empty() {
            return true;
        }
        let keep = Keep {
            excludes: Some(&self.cfg.excludes),
            unreadable: &[],
        };
        scan::list_dest(&self.cfg.pair.dst_canonical, from, false)
            .iter()
            .filter(|i| keep.keeps(&i.rel))
            .all(|i| {
                i.rel
                    .strip_prefix(from)
                    .is_ok_and(|rest| keep.keeps(&to.join(rest)))
            })
    }

    /// Phase 2: copies of what DST lacks, then (after a complete scan) deletions.
    fn follow_up(
        &mut self,
        report: &ScanReport,
        listing: &[DestItem],
        known: &MirrorState,
        rebuilding: bool,
        full: bool,
    ) -> (Vec<Action>, Vec<Action>, bool) {
        let opts = self.cfg.plan;
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
            let present: HashMap<&OsStr, Kind> = listing
                .iter()
                .map(|i| (i.rel.as_os_str(), i.kind))
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
                let Some(name) = plan::target_name(entry, &opts) else {
                    continue;
                };
                match present.get(name.as_os_str()) {
                    None => log::debug!("{} is missing from the destination", esc(&name)),
                    Some(found) if *found != entry.kind => log::warn!(
                        "{} in the destination is {} where the index says {}; writing it again",
                        esc(&self.cfg.pair.dst_canonical.join(&name)),
                        repair::what(*found),
                        repair::what(entry.kind)
                    ),
                    Some(_) => continue,
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
        if !report.complete {
            log::warn!("the scan did not finish; nothing is deleted this time");
            return (actions, Vec::new(), false);
        }
        let keep = Keep {
            excludes: Some(&self.cfg.excludes),
            unreadable: &report.unreadable,
        };
        let names = listing.iter().map(|i| (i.rel.as_path(), i.kind));
        let mut deletions = plan::plan_deletions(names, &report.targets, known, &keep, &opts);
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

    /// Before a full pass's follow-up: if DST is not a mirror yet, notes the moment
    /// (for the `restore` command the warning gives) and the versions kept so far; in a
    /// fresh DST, every file replaced from now on is kept too.
    fn start_adopting(&mut self) -> Option<(chrono::NaiveDateTime, u64)> {
        if self.adopting == Adopting::No {
            return None;
        }
        let exec = self.mode.executor()?;
        let at = chrono::Local::now().naive_local();
        let at = at.with_nanosecond(0).unwrap_or(at);
        exec.keep_every_deletion(self.adopting == Adopting::Fresh);
        Some((at, exec.versions_kept()))
    }

    /// Deletes what DST held before it became a mirror and the source lacks, keeping
    /// every file as a version, and says so in one warning: how many, where, and the
    /// `restore` command that brings them back. After a complete pass with deletions
    /// on and nothing held back, DST is a mirror (`adopted = 1` in the index).
    fn finish_adopting(
        &mut self,
        (at, kept_before): (chrono::NaiveDateTime, u64),
        foreign: Vec<Action>,
        complete: bool,
    ) {
        let planned: Vec<(PathBuf, Option<Kind>)> = foreign
            .iter()
            .map(|a| match a {
                Action::Delete { name, kind, .. } => (name.clone(), Some(*kind)),
                other => (other.dest_name(), None),
            })
            .collect();
        if let Some(exec) = self.mode.executor() {
            exec.keep_every_deletion(true);
        }
        let before_foreign = self.mode.executor().map_or(0, Executor::versions_kept);
        if !foreign.is_empty() {
            self.pump_all(foreign);
        }
        let Some(exec) = self.mode.executor() else {
            return;
        };
        let versions = crate::store::layout::versions();
        // Only names that left something to restore: a symlink or a folder holding no
        // file keeps no version, and `restore` refuses a PATH with nothing under it.
        let names: Option<Vec<PathBuf>> = planned
            .into_iter()
            .map(|(name, kind)| match kind? {
                Kind::File => Some(Some(name)),
                Kind::Dir => {
                    let kept = exec.store().stat(&versions.join(&name));
                    Some(matches!(kept, Ok(Some(s)) if s.kind == Kind::Dir).then_some(name))
                }
                _ => Some(None),
            })
            .collect::<Option<Vec<Option<PathBuf>>>>()
            .map(|n| n.into_iter().flatten().collect());
        exec.keep_every_deletion(false);
        let kept_now = exec.versions_kept();
        let all = kept_now - kept_before;
        let removed = kept_now - before_foreign;
        let kept = if self.adopting == Adopting::Fresh {
            all
        } else {
            removed
        };
        if kept > 0 {
            let (src, dst) = (&self.cfg.pair.src, &self.cfg.pair.dst_canonical);
            // Only the removed names, when they are all there is and few: else the
            // whole mirror as it was then (which holds them).
            let names = names.unwrap_or_default();
            let plain = names.iter().all(|n| n.to_str().is_some());
            let paths = if removed == kept && !names.is_empty() && names.len() <= 10 && plain {
                names
                    .iter()
                    .map(|n| format!(" {}", shell_word(&n.to_string_lossy())))
                    .collect::<String>()
            } else {
                String::new()
            };
            let (were, they) = if kept == 1 {
                ("was", "it was")
            } else {
                ("were", "they were")
            };
            log::warn!(
                "{} held {} that {were} there before it became a mirror of {} (not in the \
                 source, or replaced by it): {they} kept in {}, not lost; to get {} back, run: \
                 datasafe restore {} {} --at \"{}\"{paths}",
                esc(dst),
                count_of(kept, "file"),
                esc(src),
                esc(&dst.join(crate::store::layout::versions())),
                if kept == 1 { "it" } else { "them" },
                shell_word(&dst.to_string_lossy()),
                shell_word(&restore_target(dst).to_string_lossy()),
                at.format(crate::read::restore::AT_FORMAT),
            );
        }
        if complete && self.cfg.plan.delete && !self.stopped() {
            if let Some(index) = self.tally.index.0.as_mut() {
                let result = index.set_mirror_fact(ADOPTED, "1");
                self.tally.index.check(result);
            }
            self.adopting = Adopting::No;
        }
    }

    /// Whether the deletion guard holds back `deletions` (planned by a full pass that
    /// found `report` in the source and `listing` in DST); says why if so.
    fn guard_holds(
        &mut self,
        report: &ScanReport,
        listing: &[DestItem],
        deletions: &[Action],
    ) -> Option<Held> {
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
        if gone.is_empty() {
            return None;
        }
        let files = listing.iter().filter(|i| i.kind != Kind::Dir);
        let mirror_files = files.clone().count() as u64;
        let deleting = files
            .filter(|i| i.rel.ancestors().any(|a| gone.contains(a)))
            .count() as u64;
        let held = self
            .cfg
            .guard
            .holds(report.targets.len() as u64, deleting, mirror_files)?;
        let (src, dst) = (&self.cfg.pair.src, &self.cfg.pair.dst_canonical);
        // A running watcher keeps its options: `datasafe release` is what lets them through.
        let how = if self.watched {
            format!("run datasafe release {}", shell_word(&esc(dst).to_string()))
        } else {
            "run again with --force".to_string()
        };
        match held {
            Held::EmptySource => log::error!(
                "the source {} is empty but its mirror {} holds {}: nothing is deleted. If \
                 the source is an unmounted drive, mount it; if you emptied it on purpose, \
                 {how}",
                esc(src),
                esc(dst),
                count_of(mirror_files, "file")
            ),
            Held::MassDelete => log::error!(
                "held back {} in {}: this pass would delete {deleting} of the mirror's \
                 {} ({}); nothing was deleted. Check the source {}; to let \
                 them through, {how}",
                count_of(deleting, "deletion"),
                esc(dst),
                count_of(mirror_files, "file"),
                match self.cfg.guard.max_delete {
                    Some(max) => format!("more than max_delete = {max}"),
                    None => "more than half of it".to_string(),
                },
                esc(src)
            ),
        }
        self.tally.summary.held_deletions = deleting;
        self.holding = Some((held, deleting));
        Some(held)
    }

    /// Why the last full pass held its deletions back, if it did (cleared by reading).
    pub fn take_held(&mut self) -> Option<Held> {
        self.held.take()
    }

    /// The deletions the last full pass held back and why, until a full pass holds
    /// none (for `status`).
    pub fn holding(&self) -> Option<(Held, u64)> {
        self.holding
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

    /// Marks the mirror as run by a watcher, for the advice the deletion guard gives.
    pub fn set_watched(&mut self) {
        self.watched = true;
    }

    /// True if actions are only printed (`--dry-run`).
    pub fn dry_run(&self) -> bool {
        self.cfg.output.dry_run
    }

    /// Phase 3: mode and mtime of the folders walked whose record differs, and of every
    /// folder written into; deepest first.
    fn finish_dirs(&mut self, walked: Vec<(Entry, bool)>) {
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
                }
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Carries out (or prints, or counts) every action in `actions`; see [`pump`].
    fn pump_all(&mut self, actions: Vec<Action>) {
        let (jobs, pair) = (self.cfg.jobs, &self.cfg.pair);
        pump(
            self.mode.as_ref(),
            &mut self.tally,
            jobs,
            pair,
            &self.scanned,
            move |tx| {
                for action in actions {
                    if tx.send(action).is_err() {
                        break;
                    }
                }
            },
        );
    }
}

impl Tally {
    /// Counts, logs and indexes one outcome.
    fn absorb(&mut self, outcome: Outcome, exec: &Executor, pair: &Pair, scanned: &AtomicU64) {
        // What stood in the way of a new type went before this outcome's writes below
        // it: forget it first.
        for gone in exec.take_displaced() {
            self.summary
                .record_deleted(&gone.name, gone.kind, gone.files);
            // A file or link gave way to a folder whose entries another worker may have
            // recorded already: only its own record goes.
            if gone.kind == Kind::Dir {
                self.index.remove_tree(&gone.name);
            } else {
                self.index.remove(&gone.name);
            }
            self.touch_parent(&gone.name);
        }
        if let Outcome::Stored {
            done: Done::Copied | Done::Gzipped,
            name,
            ..
        } = &outcome
            && self.replaces_file(name)
        {
            // New content over an older copy: an update, as well as a file backed up.
            self.summary.updated += 1;
        }
        self.summary
            .record(&outcome, &pair.src, &pair.dst_canonical);
        match &outcome {
            Outcome::Stored { name, record, .. }
            | Outcome::Same { name, record }
            | Outcome::Unsettled {
                name,
                installed: Some((record, _)),
                ..
            } => {
                self.index.put(name, record);
                self.touch_parent(name);
            }
            Outcome::Deleted { name, .. } => {
                self.index.remove_tree(name);
                self.touch_parent(name);
            }
            Outcome::Renamed { from, to, .. } => {
                self.index.move_tree(from, to);
                self.touch_parent(from);
                self.touch_parent(to);
            }
            Outcome::Failed { .. } | Outcome::Interrupted { .. } | Outcome::Unsettled { .. } => {}
        }
        self.progress
            .update(scanned.load(Ordering::Relaxed), &self.summary, self.started);
        if self.index.due() {
            self.index.commit(Some(exec));
        }
    }

    /// True if the index holds a file under `name` (so writing it replaces content).
    fn replaces_file(&mut self, name: &Path) -> bool {
        self.index.get(name).is_some_and(|r| r.kind == Kind::File)
    }

    fn touch_parent(&mut self, name: &Path) {
        if let Some(parent) = name.parent() {
            self.touched.insert(parent.to_path_buf());
        }
    }
}

/// The thread that finds out what DST holds while the source is scanned: it loads the
/// records (`load`, or from a detailed listing when that gives nothing), sends them to
/// the scanner, and lists DST's names. With a [`Look`], DST is listed first (in detail
/// for a `Stat` or `Content` check) and the records are checked against it before the
/// scanner gets them.
struct DestSide(std::thread::JoinHandle<(Vec<DestItem>, bool, Vec<OsString>)>);

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
        dst: &Path,
        scope: &Path,
        known: Sender<MirrorState>,
        look: Option<Look>,
        load: impl FnOnce() -> Option<MirrorState> + Send + 'static,
    ) -> DestSide {
        let (dst, scope) = (dst.to_path_buf(), scope.to_path_buf());
        DestSide(std::thread::spawn(move || {
            if let Some(look) = look {
                let detail = look.check.needs_detail();
                let (mut items, loaded) = std::thread::scope(|s| {
                    let names = s.spawn(|| scan::list_dest(&dst, &scope, detail));
                    let loaded = load();
                    (names.join().unwrap_or_default(), loaded)
                });
                let (mut state, rebuilding) = match loaded {
                    Some(state) => (state, false),
                    None => {
                        if !detail {
                            items = scan::list_dest(&dst, &scope, true);
                        }
                        (index::state_from_listing(&dst, &items), true)
                    }
                };
                let roots = (look.src.as_path(), dst.as_path());
                let learned = repair::inspect(
                    &look.check,
                    &mut state,
                    &items,
                    roots,
                    look.jobs,
                    &look.stop,
                    look.dry_run,
                );
                let _ = known.send(state);
                return (items, rebuilding, learned);
            }
            std::thread::scope(|s| {
                let names = s.spawn(|| scan::list_dest(&dst, &scope, false));
                match load() {
                    Some(state) => {
                        let _ = known.send(state);
                        (names.join().unwrap_or_default(), false, Vec::new())
                    }
                    None => {
                        let items = scan::list_dest(&dst, &scope, true);
                        let _ = known.send(index::state_from_listing(&dst, &items));
                        (items, true, Vec::new())
                    }
                }
            })
        }))
    }

    /// DST's listing, whether the records came from it (the index is rebuilt), and the
    /// names whose digest a content check learned.
    fn join(self) -> (Vec<DestItem>, bool, Vec<OsString>) {
        self.0
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Runs `produce` on its own thread, sending actions that this thread carries out
/// (through `jobs` workers), prints, or counts, depending on `mode`; outcomes go into
/// `tally`. Returns what `produce` returned.
fn pump<R: Send>(
    mode: &dyn Carrier,
    tally: &mut Tally,
    jobs: usize,
    pair: &Pair,
    scanned: &AtomicU64,
    produce: impl FnOnce(&Sender<Action>) -> R + Send,
) -> R {
    std::thread::scope(|scope| {
        let (act_tx, act_rx) = bounded::<Action>(QUEUE);
        let pair_name = crate::output::logging::current_pair();
        let producer = scope.spawn(move || {
            crate::output::logging::set_pair(pair_name);
            produce(&act_tx)
        });
        mode.carry(scope, act_rx, tally, (jobs, pair, scanned));
        match producer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Renames first (in order), then the changed paths (deduplicated, `walk` merged).
fn coalesce(hints: Vec<Hint>) -> (Vec<(PathBuf, PathBuf)>, BTreeMap<PathBuf, bool>) {
    let mut renames = Vec::new();
    let mut changes = BTreeMap::new();
    for hint in hints {
        match hint {
            Hint::Renamed { from, to } => renames.push((from, to)),
            Hint::Changed { rel, walk } => *changes.entry(rel).or_insert(false) |= walk,
        }
    }
    (renames, changes)
}

/// Drops changes inside a folder that is walked anyway.
fn drop_covered(changes: BTreeMap<PathBuf, bool>) -> Vec<(PathBuf, bool)> {
    let walked: HashSet<PathBuf> = changes
        .iter()
        .filter(|(_, walk)| **walk)
        .map(|(p, _)| p.clone())
        .collect();
    changes
        .into_iter()
        .filter(|(p, _)| !p.ancestors().skip(1).any(|a| walked.contains(a)))
        .collect()
}

/// True if `mtime` lies within the last few seconds (or in the future).
fn recently(mtime: filetime::FileTime) -> bool {
    let now = filetime::FileTime::now();
    now.unix_seconds() - mtime.unix_seconds() < 3
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
    known_rx: crossbeam_channel::Receiver<MirrorState>,
    opts: &PlanOptions,
    actions: &Sender<Action>,
    stop: &AtomicBool,
    scanned: &AtomicU64,
) -> (ScanReport, MirrorState) {
    let mut report = ScanReport {
        complete: true,
        ..ScanReport::default()
    };
    let mut known: Option<MirrorState> = None;
    let mut waiting: Vec<Entry> = Vec::new();
    scan::walk_source(src, scope, rules, |item| {
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
                Ok(state) => known = Some(state),
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
    });
    // The walk may end before the records arrive (a small tree, a big index).
    let known = known.unwrap_or_else(|| known_rx.recv().unwrap_or_default());
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
fn say_if_uncompressed(action: &Action, opts: &PlanOptions, src: &Path) {
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

/// Prepares DST for writing (see [`Executor::new`]) and opens its index, noting whether
/// the mirror is gzipped. Returns the executor, the index, whether it describes DST and
/// how far DST is from being a mirror.
fn open_for_writing(
    cfg: &Config,
    stop: &Arc<AtomicBool>,
) -> Result<(Executor, Option<Index>, bool, Adopting), PrepareError> {
    let pair = &cfg.pair;
    let store = Local::create(&pair.dst_canonical)?;
    // No state folder: DST was never a mirror (a lost index alone leaves the folder, so
    // a mirror whose index was lost is not taken for someone else's folder).
    let fresh = !matches!(store.stat(layout::state()), Ok(Some(_)));
    let exec = Executor::with_store(&pair.src, Box::new(store), stop.clone())?
        .with_retention(cfg.versions);
    let (mut index, trusted) = open_index(&pair.dst_canonical.join(STATE_DIR), exec.store());
    let mut adopting = if fresh { Adopting::Fresh } else { Adopting::No };
    if let Some(index) = index.as_mut() {
        if fresh {
            if let Err(e) = index.set_mirror_fact(ADOPTED, "0") {
                log::warn!("{e}");
            }
        } else if index.mirror_fact(ADOPTED).as_deref() == Some("0") {
            adopting = Adopting::Unfinished;
        }
        let compress = if cfg.plan.compress { "1" } else { "0" };
        // How the mirror is kept, for the repair `verify` runs and advises.
        let delete = if cfg.plan.delete { "1" } else { "0" };
        let mut facts = vec![("compress", compress), ("delete", delete)];
        if cfg.plan.compress {
            facts.push(("compressed_ever", "1"));
        }
        for (key, value) in facts {
            if let Err(e) = index.set_mirror_fact(key, value) {
                log::warn!("{e}");
            }
        }
    }
    Ok((exec, index, trusted, adopting))
}

/// The index's fact saying whether DST has had its first complete pass as a mirror
/// (`0` until then; absent in mirrors made before it existed, which are mirrors).
const ADOPTED: &str = "adopted";

/// A folder beside DST that does not exist yet, to restore into.
fn restore_target(dst: &Path) -> PathBuf {
    // Beside DST, never inside it (a DST given with a trailing slash included).
    let name = dst
        .file_name()
        .map_or_else(|| "mirror".into(), |n| n.to_string_lossy().into_owned());
    let parent = dst.parent().unwrap_or(Path::new("/"));
    let candidate = |n: u32| match n {
        1 => parent.join(format!("{name}.before-datasafe")),
        n => parent.join(format!("{name}.before-datasafe-{n}")),
    };
    (1..1000)
        .map(candidate)
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| candidate(1))
}

/// `word` as one shell word: as it is when it is plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The index for a mirror that writes: opened, and on any damage thrown away and started
/// afresh. Returns the index and whether it can be trusted to describe DST.
fn open_index(state_dir: &Path, store: &dyn Store) -> (Option<Index>, bool) {
    match Index::open(state_dir) {
        Ok((index, existed)) => return (Some(index), existed),
        Err(e) => log::warn!("{e}; rebuilding the index from the destination"),
    }
    discard_index(store);
    match Index::open(state_dir) {
        Ok((index, _)) => (Some(index), false),
        Err(e) => {
            log::error!("{e}; continuing without an index (the next run compares DST again)");
            (None, false)
        }
    }
}

/// Removes a damaged index (with SQLite's companion files) through the store.
fn discard_index(store: &dyn Store) {
    for name in layout::index_files() {
        let _ = store.remove_file(&name);
    }
}

/// The index for a mirror that does not write (`--dry-run`, unwritable DST).
fn read_index(state_dir: &Path) -> (Option<Index>, bool) {
    match Index::open_untouched(state_dir) {
        Ok(index) => {
            let trusted = index.is_some();
            (index, trusted)
        }
        Err(e) => {
            log::warn!("{e}; comparing with the destination instead");
            (None, false)
        }
    }
}

/// The index, owned by the engine thread; a failing index is reported once and then
/// left alone (the data in DST is what matters; the next run rebuilds the index).
struct IndexWriter(Option<Index>);

impl IndexWriter {
    fn get(&mut self, name: &Path) -> Option<Record> {
        let result = self.0.as_ref()?.get(name);
        self.check(result).flatten()
    }

    /// Records at and below `scope`; `None` if there is no usable index.
    fn load_under(&mut self, scope: &Path) -> Option<MirrorState> {
        let result = self.0.as_ref()?.load_under(scope);
        self.check(result)
    }

    fn put(&mut self, name: &Path, record: &Record) {
        if let Some(index) = self.0.as_mut() {
            let result = index.put(name, record);
            self.check(result);
        }
    }

    fn remove(&mut self, name: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.remove(name);
            self.check(result);
        }
    }

    fn remove_tree(&mut self, name: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.remove_tree(name);
            self.check(result);
        }
    }

    fn move_tree(&mut self, from: &Path, to: &Path) {
        if let Some(index) = self.0.as_mut() {
            let result = index.move_tree(from, to);
            self.check(result);
        }
    }

    fn due(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.pending_for() >= COMMIT_EVERY)
    }

    /// Makes DST's writes durable, then commits the index.
    fn commit(&mut self, exec: Option<&Executor>) {
        if self.0.as_ref().is_none_or(|i| i.pending_for().is_zero()) {
            return;
        }
        if let Some(exec) = exec
            && let Err(e) = exec.barrier()
        {
            log::warn!("flushing the destination to disk: {}", io_message(&e));
        }
        if let Some(index) = self.0.as_mut() {
            let result = index.commit();
            self.check(result);
        }
    }

    /// Passes a result through; on error reports it and drops the index.
    fn check<T>(&mut self, result: Result<T, index::IndexError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("{e}; the index will be rebuilt next run");
                self.0 = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally() -> Tally {
        Tally {
            index: IndexWriter(None),
            summary: Summary::default(),
            touched: HashSet::new(),
            progress: Progress::start(false),
            started: Instant::now(),
        }
    }

    /// Hands `actions` to `carrier` as a pass would and returns the counts.
    fn carried(carrier: &dyn Carrier, src: &Path, actions: Vec<Action>) -> Summary {
        let pair = Pair {
            src: src.to_path_buf(),
            dst_in_src: None,
            dst_canonical: PathBuf::from("memory:"),
        };
        let mut tally = tally();
        pump(carrier, &mut tally, 2, &pair, &AtomicU64::new(0), |tx| {
            for action in actions {
                tx.send(action).unwrap();
            }
        });
        tally.summary
    }

    #[test]
    fn a_dry_run_counts_what_the_executor_does_and_writes_nothing() {
        use crate::store::memory::Memory;
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.txt"), "hello").unwrap();
        let meta = std::fs::symlink_metadata(src.path().join("a.txt")).unwrap();
        let actions = || {
            vec![
                Action::Copy {
                    entry: Entry {
                        rel: "a.txt".into(),
                        kind: Kind::File,
                        meta: Meta::of(&meta),
                        target: None,
                    },
                    stored: Stored::Plain,
                    was: None,
                },
                Action::Delete {
                    name: "gone".into(),
                    kind: Kind::File,
                    superseded: false,
                },
            ]
        };
        let untouched = Memory::new();
        let dry = carried(&DryRun, src.path(), actions());
        assert!(untouched.names().is_empty());
        assert_eq!((dry.copied, dry.bytes_copied, dry.failed), (1, 5, 0));

        let written = Memory::new();
        written
            .put_file(Path::new("gone"), b"x", filetime::FileTime::zero())
            .unwrap();
        let exec = Executor::with_store(
            src.path(),
            Box::new(written.clone()),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        let wet = carried(&exec, src.path(), actions());
        assert_eq!(
            (wet.copied, wet.bytes_copied, wet.deleted),
            (dry.copied, dry.bytes_copied, dry.deleted)
        );
        assert_eq!(
            written.read(Path::new("a.txt")).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(written.read(Path::new("gone")), None);
    }

    #[test]
    fn a_blocked_destination_counts_every_action_as_failed() {
        let src = tempfile::tempdir().unwrap();
        let actions = (0..3)
            .map(|i| Action::Delete {
                name: format!("f{i}").into(),
                kind: Kind::File,
                superseded: false,
            })
            .collect();
        let summary = carried(&Blocked, src.path(), actions);
        assert_eq!((summary.failed, summary.deleted), (3, 0));
    }

    #[test]
    fn the_restore_target_lies_beside_the_mirror() {
        assert_eq!(
            restore_target(Path::new("/no/such/dir/Documents/")),
            Path::new("/no/such/dir/Documents.before-datasafe")
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/tmp/a-b_c.txt"), "/tmp/a-b_c.txt");
        assert_eq!(shell_word("my notes"), "'my notes'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn hints_coalesce_and_walks_cover_their_insides() {
        let hints = vec![
            Hint::Changed {
                rel: "a/x".into(),
                walk: false,
            },
            Hint::Renamed {
                from: "r1".into(),
                to: "r2".into(),
            },
            Hint::Changed {
                rel: "a".into(),
                walk: false,
            },
            Hint::Changed {
                rel: "a".into(),
                walk: true,
            },
            Hint::Changed {
                rel: "ab".into(),
                walk: false,
            },
        ];
        let (renames, changes) = coalesce(hints);
        assert_eq!(renames, [(PathBuf::from("r1"), PathBuf::from("r2"))]);
        let kept = drop_covered(changes);
        assert_eq!(
            kept,
            [(PathBuf::from("a"), true), (PathBuf::from("ab"), false)]
        );
    }
}

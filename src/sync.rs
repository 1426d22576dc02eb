//! One reconcile pass of one mirror, the engine every command drives:
//! scan → plan → exec → index, in three phases.
//!
//! 1. A scanner thread walks SRC, plans each entry against what the mirror holds and
//!    feeds a bounded channel; `jobs` workers carry the actions out while the scan goes
//!    on; this thread owns the index and records each outcome. In parallel, DST's names
//!    are listed (with an index, names only: a no-op run stats only the source).
//! 2. Once the scan is complete, what DST lacks (a file deleted from the mirror behind
//!    the index's back) is copied and what the source lacks is deleted. An interrupted
//!    or partial scan deletes nothing.
//! 3. Folders get their mode and mtime last, deepest first, since writing into a folder
//!    changes its mtime.
//!
//! The index is committed every few seconds and at the end, each time after one
//! filesystem sync, so it never claims a file the disk might not have.

use crate::config::{Config, Pair};
use crate::exec::{Executor, Outcome, spawn_workers};
use crate::index::{self, Index, MirrorState, Record};
use crate::names::{esc, io_message};
use crate::plan::{self, Action, Decision, Keep, PlanOptions};
use crate::report::{Progress, Summary};
use crate::scan::{self, DestItem, Entry, Kind, STATE_DIR, ScanRules, Scanned};
use crossbeam_channel::{Sender, bounded};
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the index is committed during a long run.
const COMMIT_EVERY: Duration = Duration::from_secs(2);
/// Capacity of the channel between the scanner and the workers.
const QUEUE: usize = 256;

/// Runs one full reconcile of `cfg`'s pair and prints its summary.
pub fn run(cfg: &Config, stop: &Arc<AtomicBool>) -> Summary {
    let started = Instant::now();
    let pair = &cfg.pair;
    if let Some(rel) = &pair.dst_in_src {
        log::info!(
            "destination is inside the source; leaving {} out of the scan",
            esc(rel)
        );
    }
    let mut engine = Engine::new(cfg, stop);
    engine.reconcile();
    let mut summary = engine.tally.summary;
    summary.interrupted = stop.load(Ordering::Relaxed);
    summary.finish(started, cfg.output.json);
    summary
}

/// Where actions go.
enum Mode {
    /// Carried out.
    Write(Executor),
    /// Printed (`--dry-run`).
    DryRun,
    /// DST cannot be written: each action counts as failed (one error said why).
    Blocked,
}

/// What the scanner found besides the actions it sent.
#[derive(Default)]
struct ScanReport {
    /// Every name the source maps to in DST.
    targets: HashSet<PathBuf>,
    /// Entries the planner found current (checked against DST's names afterwards).
    unchanged: Vec<Entry>,
    /// Every source folder, and whether its recorded mode/mtime differ.
    dirs: Vec<(Entry, bool)>,
    /// Source paths that could not be read: DST keeps what it has for them.
    unreadable: Vec<PathBuf>,
    /// FIFOs, sockets, devices.
    skipped: u64,
    /// False if the walk was cut short: then nothing may be deleted.
    complete: bool,
}

struct Engine<'a> {
    cfg: &'a Config,
    stop: &'a Arc<AtomicBool>,
    mode: Mode,
    /// What the mirror holds (from the index, or rebuilt from DST).
    known: MirrorState,
    /// True if `known` came from listing DST, not from the index.
    rebuilding: bool,
    /// Entries the scanner has seen, for the progress line.
    scanned: Arc<AtomicU64>,
    tally: Tally,
}

/// What the engine thread accumulates from outcomes: counts, the index, touched folders.
struct Tally {
    index: IndexWriter,
    summary: Summary,
    /// DST folders written into this run (their mtime must be set again).
    touched: HashSet<PathBuf>,
    progress: Progress,
    started: Instant,
}

impl<'a> Engine<'a> {
    fn new(cfg: &'a Config, stop: &'a Arc<AtomicBool>) -> Engine<'a> {
        let pair = &cfg.pair;
        let state_dir = pair.dst.join(STATE_DIR);
        let (mode, index, known) = if cfg.output.dry_run {
            (Mode::DryRun, IndexWriter(None), read_index(&state_dir))
        } else {
            match Executor::new(&pair.src, &pair.dst, stop.clone()) {
                Ok(exec) => {
                    let (index, known) = open_index(&state_dir);
                    (Mode::Write(exec), IndexWriter(index), known)
                }
                Err(message) => {
                    log::error!("{message}");
                    (Mode::Blocked, IndexWriter(None), read_index(&state_dir))
                }
            }
        };
        Engine {
            cfg,
            stop,
            mode,
            rebuilding: known.is_none(),
            known: known.unwrap_or_default(),
            scanned: Arc::new(AtomicU64::new(0)),
            tally: Tally {
                index,
                summary: Summary {
                    dry_run: cfg.output.dry_run,
                    ..Summary::default()
                },
                touched: HashSet::new(),
                progress: Progress::start(cfg.output.verbosity > crate::config::Verbosity::Quiet),
                started: Instant::now(),
            },
        }
    }

    fn reconcile(&mut self) {
        let cfg = self.cfg;
        let dst = cfg.pair.dst.clone();
        // Without an index, DST's metadata stands in for it (and rebuilds it); with one,
        // only DST's names are needed, listed while the source is scanned.
        let (listing, pending_listing) = if self.rebuilding {
            let items = if dst.is_dir() {
                scan::list_dest(&dst, true)
            } else {
                Vec::new()
            };
            self.known = index::state_from_listing(&dst, &items);
            (Some(items), None)
        } else {
            let dst = dst.clone();
            (
                None,
                Some(std::thread::spawn(move || scan::list_dest(&dst, false))),
            )
        };

        let rules = ScanRules {
            excludes: cfg.excludes.clone(),
            skip: cfg.pair.dst_in_src.iter().cloned().collect(),
        };
        let report = {
            let known = std::mem::take(&mut self.known);
            let scanned = self.scanned.clone();
            let stop = self.stop;
            let opts = cfg.plan;
            let src = cfg.pair.src.as_path();
            let report = self
                .pump(|actions| scan_and_plan(src, &rules, &known, &opts, actions, stop, &scanned));
            self.known = known;
            report
        };
        self.tally.summary.skipped += report.skipped;
        self.tally.summary.failed += report.unreadable.len() as u64;
        let listing = match (listing, pending_listing) {
            (Some(items), _) => items,
            (None, Some(handle)) => handle.join().unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        if self.stop.load(Ordering::Relaxed) {
            self.tally.index.commit(self.mode.executor());
            return;
        }

        let follow_up = self.follow_up(&report, &listing);
        if !follow_up.is_empty() {
            self.pump(move |actions| {
                for action in follow_up {
                    if actions.send(action).is_err() {
                        break;
                    }
                }
            });
        }
        if !self.stop.load(Ordering::Relaxed) {
            self.finish_dirs(report.dirs);
        }
        self.tally.index.commit(self.mode.executor());
    }

    /// Phase 2: copies of what DST lacks, then (after a complete scan) deletions.
    fn follow_up(&mut self, report: &ScanReport, listing: &[DestItem]) -> Vec<Action> {
        let opts = &self.cfg.plan;
        let mut actions = Vec::new();
        if self.rebuilding {
            // `known` came from DST itself, so everything unchanged is there: record it.
            for entry in &report.unchanged {
                if let Some(name) = plan::target_name(entry, opts) {
                    self.tally.index.put(&name, &record_of(entry, opts));
                }
            }
        } else {
            let present: HashSet<&Path> = listing.iter().map(|i| i.rel.as_path()).collect();
            for entry in &report.unchanged {
                let Some(name) = plan::target_name(entry, opts) else {
                    continue;
                };
                if present.contains(name.as_path()) {
                    continue;
                }
                log::debug!("{} is missing from the destination", esc(&name));
                actions.push(match entry.kind {
                    Kind::Dir => Action::Mkdir {
                        entry: entry.clone(),
                    },
                    Kind::Symlink => Action::Symlink {
                        entry: entry.clone(),
                    },
                    _ => Action::Copy {
                        entry: entry.clone(),
                        stored: opts.stored(),
                    },
                });
            }
        }
        self.tally.summary.unchanged += report
            .unchanged
            .iter()
            .filter(|e| e.kind != Kind::Dir)
            .count() as u64
            - actions
                .iter()
                .filter(|a| !matches!(a, Action::Mkdir { .. }))
                .count() as u64;
        if !report.complete {
            log::warn!("the scan did not finish; nothing is deleted this run");
            return actions;
        }
        let keep = Keep {
            excludes: Some(&self.cfg.excludes),
            unreadable: &report.unreadable,
        };
        let names = listing.iter().map(|i| (i.rel.as_path(), i.kind));
        actions.extend(plan::plan_deletions(
            names,
            &report.targets,
            &self.known,
            &keep,
            opts,
        ));
        actions
    }

    /// Phase 3: mode and mtime of folders that were created, written into, or differ.
    fn finish_dirs(&mut self, mut dirs: Vec<(Entry, bool)>) {
        let Mode::Write(exec) = &self.mode else {
            return;
        };
        dirs.sort_by_key(|(e, _)| std::cmp::Reverse(e.rel.components().count()));
        for (entry, differs) in dirs {
            if !differs && !self.tally.touched.contains(&entry.rel) {
                continue;
            }
            match exec.finish_dir(&entry.rel, &entry.meta) {
                Ok(()) => self
                    .tally
                    .index
                    .put(&entry.rel, &record_of(&entry, &self.cfg.plan)),
                Err(message) => {
                    self.tally.summary.failed += 1;
                    log::error!("{message}");
                }
            }
        }
    }

    /// Runs `produce` on its own thread, sending actions that this thread carries out
    /// (through the workers), prints, or counts, depending on the mode. Returns what
    /// `produce` returned.
    fn pump<R: Send>(&mut self, produce: impl FnOnce(&Sender<Action>) -> R + Send) -> R {
        let cfg = self.cfg;
        std::thread::scope(|scope| {
            let (act_tx, act_rx) = bounded::<Action>(QUEUE);
            let producer = scope.spawn(move || produce(&act_tx));
            match &self.mode {
                Mode::Write(exec) => {
                    let (out_tx, out_rx) = bounded::<Outcome>(QUEUE);
                    spawn_workers(scope, exec, cfg.jobs, &act_rx, &out_tx);
                    drop((out_tx, act_rx));
                    for outcome in out_rx {
                        self.tally.absorb(outcome, exec, &cfg.pair, &self.scanned);
                    }
                }
                Mode::DryRun => {
                    for action in act_rx {
                        self.tally.summary.record_planned(&action);
                    }
                }
                Mode::Blocked => {
                    for _ in act_rx {
                        self.tally.summary.failed += 1;
                    }
                }
            }
            match producer.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Mode {
    fn executor(&self) -> Option<&Executor> {
        match self {
            Mode::Write(exec) => Some(exec),
            Mode::DryRun | Mode::Blocked => None,
        }
    }
}

impl Tally {
    /// Counts, logs and indexes one outcome.
    fn absorb(&mut self, outcome: Outcome, exec: &Executor, pair: &Pair, scanned: &AtomicU64) {
        self.summary.record(&outcome, &pair.src, &pair.dst);
        match &outcome {
            Outcome::Stored { name, record, .. } | Outcome::Same { name, record } => {
                self.index.put(name, record);
                self.touch_parent(name);
            }
            Outcome::Deleted { name, .. } => {
                self.index.remove_tree(name);
                self.touch_parent(name);
            }
            Outcome::Failed { .. } | Outcome::Interrupted { .. } => {}
        }
        self.progress
            .update(scanned.load(Ordering::Relaxed), &self.summary, self.started);
        if self.index.due() {
            self.index.commit(Some(exec));
        }
    }

    fn touch_parent(&mut self, name: &Path) {
        if let Some(parent) = name.parent() {
            self.touched.insert(parent.to_path_buf());
        }
    }
}

/// Walks the source and plans every entry; runs on the scanner thread.
fn scan_and_plan(
    src: &Path,
    rules: &ScanRules,
    known: &MirrorState,
    opts: &PlanOptions,
    actions: &Sender<Action>,
    stop: &AtomicBool,
    scanned: &AtomicU64,
) -> ScanReport {
    let mut report = ScanReport {
        complete: true,
        ..ScanReport::default()
    };
    scan::walk_source(src, rules, |item| {
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
        if entry.rel.as_os_str().is_empty() {
            // The root: it is DST itself, so only its mode and mtime are mirrored.
            let differs = plan::dir_meta_differs(&entry, known.get(Path::new("")));
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
        let known_rec = known.get(&name);
        if entry.kind == Kind::Dir {
            report
                .dirs
                .push((entry.clone(), plan::dir_meta_differs(&entry, known_rec)));
        }
        match plan::plan_entry(&entry, known_rec, opts) {
            Decision::Unchanged => report.unchanged.push(entry),
            Decision::Act(action) => {
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
        report.targets.insert(name);
        ControlFlow::Continue(())
    });
    report
}

/// The index record for a source entry stored as `opts` says.
fn record_of(entry: &Entry, opts: &PlanOptions) -> Record {
    Record {
        kind: entry.kind,
        meta: entry.meta,
        sha256: None,
        stored: if entry.kind == Kind::File {
            opts.stored()
        } else {
            index::Stored::Plain
        },
        target: entry.target.clone(),
    }
}

/// The index for a run that writes: opened, loaded, and on any damage thrown away and
/// started afresh (the run then rebuilds it from DST). `None` state means "rebuild".
fn open_index(state_dir: &Path) -> (Option<Index>, Option<MirrorState>) {
    match Index::open(state_dir) {
        Ok((index, true)) => match index.load() {
            Ok(state) => return (Some(index), Some(state)),
            Err(e) => log::warn!("{e}; rebuilding the index from the destination"),
        },
        Ok((index, false)) => return (Some(index), None),
        Err(e) => log::warn!("{e}; rebuilding the index from the destination"),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(state_dir.join(format!("{}{suffix}", index::INDEX_FILE)));
    }
    match Index::open(state_dir) {
        Ok((index, _)) => (Some(index), None),
        Err(e) => {
            log::error!("{e}; continuing without an index (the next run compares DST again)");
            (None, None)
        }
    }
}

/// The index for a run that does not write (`--dry-run`, unwritable DST).
fn read_index(state_dir: &Path) -> Option<MirrorState> {
    match Index::open_read_only(state_dir) {
        Ok(state) => state,
        Err(e) => {
            log::warn!("{e}; comparing with the destination instead");
            None
        }
    }
}

/// The index, owned by the engine thread; a failing index is reported once and then
/// left alone (the data in DST is what matters; the next run rebuilds the index).
struct IndexWriter(Option<Index>);

impl IndexWriter {
    fn put(&mut self, name: &Path, record: &Record) {
        let result = self.0.as_mut().map(|i| i.put(name, record));
        self.check(result);
    }

    fn remove_tree(&mut self, name: &Path) {
        let result = self.0.as_mut().map(|i| i.remove_tree(name));
        self.check(result);
    }

    fn due(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|i| i.pending_for() >= COMMIT_EVERY)
    }

    /// Makes DST's writes durable, then commits the index.
    fn commit(&mut self, exec: Option<&Executor>) {
        if self.0.is_none() {
            return;
        }
        if let Some(exec) = exec
            && let Err(e) = exec.barrier()
        {
            log::warn!("flushing the destination to disk: {}", io_message(&e));
        }
        let result = self.0.as_mut().map(Index::commit);
        self.check(result);
    }

    fn check(&mut self, result: Option<Result<(), index::IndexError>>) {
        if let Some(Err(e)) = result {
            log::error!("{e}; the index will be rebuilt next run");
            self.0 = None;
        }
    }
}

//! The mirror engine every command drives: scan → plan → exec → index. A [`Mirror`] is
//! one pair (SRC, DST) with its executor and index; it can reconcile all of it or one
//! folder ([`Mirror::reconcile`]), or re-check single paths ([`Mirror::apply`], for
//! `watch`). `sync` is one full reconcile of each pair (its runner is `cli::sync`).
//!
//! A reconcile has three phases:
//! 1. A scanner thread walks SRC (or the folder in scope) and plans each entry against
//!    what DST holds in its folder (`holdings`: the folder's records and, where listing
//!    is cheap, DST's names there — readdir only, a no-op run stats only the source —
//!    read folder by folder on another thread, in walk order), feeding a bounded
//!    channel; what DST lacks (a file deleted from the mirror behind the index's back)
//!    is copied at once; `jobs` workers carry the actions out while the scan goes on;
//!    this thread owns the index and records each outcome (what the index only learns,
//!    a record rebuilt from DST or a digest, comes as an `Action::Record` too, so no
//!    pass keeps a list that grows with the tree). When the walk leaves a
//!    folder, what DST holds there that the source lacks is planned for deletion.
//! 2. Once the scan is complete, the deletions are carried out (after the deletion
//!    guard). An interrupted or partial scan deletes nothing.
//! 3. Folders get their mode and mtime last, deepest first, since writing into a folder
//!    changes its mtime.
//!
//! The index is committed every few seconds and at the end, each time after one
//! filesystem sync, so it never claims a file the disk might not have.
//!
//! This file owns [`Mirror`]: opening a pair (and reopening a lost DST), the state it
//! holds and what callers read of it. The rest, by concern: `reconcile` (the passes,
//! phases 1–3), `hints` (`apply`, for `watch`), `guard` (the deletion guard, adopting a
//! folder that was not a mirror), `pump` (the carriers and the outcome tally),
//! `index_writer` (the index as the engine thread holds it).

mod guard;
mod hints;
mod holdings;
mod index_writer;
mod prefetch;
mod pump;
mod reconcile;
mod relink;

use guard::{ADOPTED, Adopting};
use index_writer::{IndexWriter, open_index, read_index};
use prefetch::Prefetch;
use pump::{Blocked, Carrier, DryRun, Tally};

use crate::config::{Config, Dest, Pair};
use crate::engine::exec::{Executor, PrepareError};
use crate::engine::plan::Held;
use crate::engine::repair::Check;
use crate::engine::scan::ScanRules;
use crate::engine::source::Source;
use crate::index::Index;
use crate::model::Kind;
use crate::output::names::esc;
use crate::output::report::{Progress, Summary};
use crate::store::Reader;
use crate::store::layout::{self, STATE_DIR};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What happened to a batch of hints.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The hints were carried out.
    Done,
    /// SRC's root is gone (unmounted, removed): nothing was done, nothing deleted.
    SourceGone,
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
    /// Versions the executor had kept when versions were last pruned.
    kept_at_prune: u64,
    /// The walk of SRC and the read of the index `sync` started before DST was
    /// reached, for the first full pass.
    prefetch: Prefetch,
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
    ) -> Result<Mirror, PrepareError> {
        Mirror::open_with(cfg, stop, show_progress, false, false)
    }

    /// As [`Mirror::open`], but an unwritable DST is an error too (for `sync`: a run
    /// that can write nothing should say so once, not fail every file).
    pub fn open_to_write(
        cfg: &Config,
        stop: &Arc<AtomicBool>,
        show_progress: bool,
    ) -> Result<Mirror, PrepareError> {
        Mirror::open_with(cfg, stop, show_progress, true, false)
    }

    /// As [`Mirror::open_to_write`], for one `sync` pass: to a remote DST, SRC is walked
    /// and the index read while the connection is made (see `prefetch`).
    pub fn open_to_sync(
        cfg: &Config,
        stop: &Arc<AtomicBool>,
        show_progress: bool,
    ) -> Result<Mirror, PrepareError> {
        Mirror::open_with(cfg, stop, show_progress, true, true)
    }

    fn open_with(
        cfg: &Config,
        stop: &Arc<AtomicBool>,
        show_progress: bool,
        refuse_unwritable: bool,
        prefetching: bool,
    ) -> Result<Mirror, PrepareError> {
        let pair = &cfg.pair;
        let rules = scan_rules(cfg);
        let prefetch = match pair.dst.is_remote() {
            true if prefetching && !cfg.output.dry_run => Prefetch::start(&pair.src, &rules, stop),
            _ => Prefetch::default(),
        };
        if let Some(rel) = &pair.dst_in_src {
            log::info!(
                "destination is inside the source; leaving {} out of the scan",
                esc(rel)
            );
        }
        let mut adopting = Adopting::No;
        let mut blocked = false;
        let (mode, index, trusted) = if cfg.output.dry_run {
            let reader = read_only(&pair.dst);
            let (index, trusted) = read_index(index_dir_of(reader.as_deref()).as_deref());
            (Box::new(DryRun(reader)) as Box<dyn Carrier>, index, trusted)
        } else {
            match open_for_writing(cfg, stop) {
                Ok((exec, index, trusted, adopt)) => {
                    adopting = adopt;
                    (Box::new(exec) as Box<dyn Carrier>, index, trusted)
                }
                Err(e @ PrepareError::Locked(_)) => return Err(e),
                Err(e @ PrepareError::Unwritable(_)) if refuse_unwritable => return Err(e),
                Err(PrepareError::Unwritable(message)) => {
                    log::error!("{message}");
                    blocked = true;
                    let reader = read_only(&pair.dst);
                    let (index, trusted) = read_index(index_dir_of(reader.as_deref()).as_deref());
                    (
                        Box::new(Blocked(reader)) as Box<dyn Carrier>,
                        index,
                        trusted,
                    )
                }
            }
        };
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
            rules,
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
            // A remote DST not reached at the start is tried again as a lost one (the
            // watcher says "reconnecting" and retries with backoff).
            lost: blocked && pair.dst.is_remote(),
            adopting,
            watched: false,
            kept_at_prune: 0,
            prefetch,
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
    pub fn reopen(&mut self) -> Result<(), PrepareError> {
        // The old lock and index live on in unlinked files: let them go first.
        if let Some(exec) = self.mode.executor() {
            self.tally.summary.versions_kept += exec.versions_kept();
            self.tally.summary.versions_pruned += exec.pruned_for_room();
        }
        self.mode = Box::new(Blocked(None));
        self.tally.index = IndexWriter(None);
        self.lost = true;
        let (exec, index, trusted, adopting) = open_for_writing(&self.cfg, &self.stop)?;
        self.mode = Box::new(exec);
        self.tally.index = IndexWriter(index);
        self.trusted = trusted;
        self.lost = false;
        self.adopting = adopting;
        Ok(())
    }

    /// The pair this mirror serves.
    pub fn pair(&self) -> &Pair {
        &self.cfg.pair
    }

    /// How many times the store connected to DST (see `Store::connections`; 0 when
    /// nothing is written).
    pub fn connections(&self) -> u64 {
        self.mode
            .executor()
            .map_or(0, |exec| exec.store().connections())
    }

    /// A full pass again after a connection to DST was lost and made again during the
    /// last one: it writes what failed in flight. Its failures replace the last pass's,
    /// and what it finds unchanged was counted already.
    pub fn resume(&mut self, check: &Check) {
        let unchanged = self.tally.summary.unchanged;
        self.tally.summary.failed = 0;
        self.tally.summary.unreachable = 0;
        self.reconcile_checking(Path::new(""), check);
        self.commit();
        self.tally.summary.unchanged = unchanged;
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
            None => crate::store::open_reader(&self.cfg.pair.dst).and_then(|dst| dst.stat(name)),
        };
        matches!(found, Ok(Some(s)) if s.kind == Kind::Dir)
    }

    /// The folder of the index of DST, if DST can be reached: inside DST for a local
    /// folder, a local cache for a remote one.
    fn index_dir(&self) -> Option<PathBuf> {
        index_dir_of(self.mode.reader().as_deref())
    }

    /// Makes DST's writes durable and commits the index.
    pub fn commit(&mut self) {
        self.tally.index.commit(self.mode.executor());
    }

    /// Commits if changes have waited long enough.
    pub fn commit_if_due(&mut self) {
        if self.tally.index.due() {
            self.commit();
        } else if let Some(exec) = self.mode.executor()
            && let Err(e) = exec.store().index_idle()
        {
            log::warn!(
                "saving the index into the mirror: {}",
                crate::output::names::io_message(&e)
            );
        }
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

    /// Marks the mirror as run by a watcher, for the advice the deletion guard gives.
    pub fn set_watched(&mut self) {
        self.watched = true;
    }

    /// True if actions are only printed (`--dry-run`).
    pub fn dry_run(&self) -> bool {
        self.cfg.output.dry_run
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What the walks of `cfg`'s pair leave out: the user's excludes, DST when it lies
/// inside SRC, and our own log files inside SRC (which would otherwise be copied after
/// every line).
fn scan_rules(cfg: &Config) -> ScanRules {
    let pair = &cfg.pair;
    let mut skip: Vec<PathBuf> = pair.dst_in_src.iter().cloned().collect();
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
    ScanRules {
        excludes: cfg.excludes.clone(),
        skip,
        kept: cfg.plan.kept,
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
    let store = crate::store::create(&pair.dst)?;
    // No state folder: DST was never a mirror (a lost index alone leaves the folder, so
    // a mirror whose index was lost is not taken for someone else's folder).
    let fresh = !matches!(store.stat(layout::state()), Ok(Some(_)));
    let exec = Executor::with_store(&pair.src, store, stop.clone())?
        .with_retention(cfg.versions)
        .with_attrs(cfg.plan.owners, cfg.plan.kept);
    let index_dir = index_dir_of(Some(exec.store() as &dyn Reader)).unwrap_or_default();
    let (mut index, trusted) = open_index(&index_dir, exec.store());
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
        // What the pair keeps beyond content, for `verify` (compare only what the writer
        // set: owners only where it could give them) and its repair (keep keeping it).
        let kept = cfg.plan.kept;
        // `refused`: DST would not take owners on an earlier pass; it stays until a pass
        // gives one (`Mirror::note_owners`).
        let owners = cfg.plan.owners && exec.store().caps().owners;
        let refused = index.mirror_fact("owners").as_deref() == Some("refused");
        facts.push((
            "owners",
            match (owners, refused) {
                (false, _) => "0",
                (true, true) => "refused",
                (true, false) => "1",
            },
        ));
        // Attributes DST refused on an earlier pass stay `refused` the same way.
        let attrs_refused = index.mirror_fact("xattrs").as_deref() == Some("refused")
            || index.mirror_fact("acls").as_deref() == Some("refused");
        facts.push((
            "xattrs",
            match (kept.xattrs, kept.every_namespace) {
                (false, _) => "0",
                _ if attrs_refused => "refused",
                (true, false) => "user",
                (true, true) => "all",
            },
        ));
        facts.push((
            "acls",
            match kept.acls {
                false => "0",
                true if attrs_refused => "refused",
                true => "1",
            },
        ));
        if cfg.plan.compress {
            facts.push(("compressed_ever", "1"));
        }
        for (key, value) in facts {
            // Written only when they change: a no-op pass commits nothing (and a remote
            // store then publishes nothing).
            if index.mirror_fact(key).as_deref() == Some(value) {
                continue;
            }
            if let Err(e) = index.set_mirror_fact(key, value) {
                log::warn!("{e}");
            }
        }
    }
    Ok((exec, index, trusted, adopting))
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

/// DST opened read-only, for the listing of a run that writes nothing (a dry run, a
/// blocked DST); `None` if it cannot be opened (there is nothing to list).
fn read_only(dst: &Dest) -> Option<Arc<dyn Reader>> {
    crate::store::open_reader(dst).ok().map(Arc::from)
}

/// The folder that holds the index of the store `reader` (`None` without one).
fn index_dir_of(reader: Option<&dyn Reader>) -> Option<PathBuf> {
    let file = reader?.index_file();
    file.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/tmp/a-b_c.txt"), "/tmp/a-b_c.txt");
        assert_eq!(shell_word("my notes"), "'my notes'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }
}

//! Where a mirror's actions go: the [`Carrier`] trait and its three implementations
//! (the executor carries actions out, [`DryRun`] records them as planned, [`Blocked`]
//! counts each as failed), [`pump`] (a producer thread feeding a carrier through a
//! bounded channel) and [`Tally`], which the engine thread fills from the outcomes:
//! counts, the index, the folders written into.

use super::Mirror;
use super::index_writer::IndexWriter;
use crate::config::Pair;
use crate::engine::exec::{Done, Executor, Intent, Outcome, spawn_workers};
use crate::engine::plan::Action;
use crate::model::Kind;
use crate::output::report::{Progress, Summary};
use crate::store::Reader;
use crossbeam_channel::{Sender, bounded};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Capacity of the channel between the scanner and the workers.
const QUEUE: usize = 256;

/// Where a mirror's actions go (see [`pump`]): the executor carries them out, a dry run
/// records them as planned, a DST that cannot be written counts each as failed. The
/// engine hands every action over the same way, whichever it is.
pub(super) trait Carrier: Send + Sync {
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

    /// DST as the engine reads it (its listing, the look a repair takes): the
    /// executor's store, or for a dry run and a blocked DST the folder opened read-only
    /// (`None` when it cannot be opened: nothing is there to list).
    fn reader(&self) -> Option<Arc<dyn Reader>>;
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
        // Moves made in steps are announced here first (see `Intent`).
        let (intent_tx, intent_rx) = crossbeam_channel::unbounded::<Intent>();
        self.hold_source(true);
        self.announce_to(Some(intent_tx));
        spawn_workers(scope, self, jobs, &actions, &out_tx);
        drop((out_tx, actions));
        loop {
            crossbeam_channel::select! {
                recv(out_rx) -> outcome => match outcome {
                    Ok(outcome) => tally.absorb(outcome, self, pair, scanned),
                    Err(_) => break,
                },
                recv(intent_rx) -> intent => {
                    if let Ok(intent) = intent {
                        tally.intend(intent, self);
                    }
                }
            }
        }
        self.announce_to(None);
        self.hold_source(false);
    }

    fn executor(&self) -> Option<&Executor> {
        Some(self)
    }

    fn reader(&self) -> Option<Arc<dyn Reader>> {
        Some(Executor::reader(self))
    }
}

/// `--dry-run`: each action is recorded as planned (and printed), nothing is written.
pub(super) struct DryRun(pub(super) Option<Arc<dyn Reader>>);

impl Carrier for DryRun {
    fn carry<'scope, 'env>(
        &'env self,
        _scope: &'scope std::thread::Scope<'scope, 'env>,
        actions: crossbeam_channel::Receiver<Action>,
        tally: &mut Tally,
        _: (usize, &Pair, &AtomicU64),
    ) {
        for action in actions {
            if matches!(action, Action::Record { .. }) {
                continue;
            }
            let replaces =
                matches!(action, Action::Copy { .. }) && tally.replaces_file(&action.dest_name());
            tally.summary.record_planned(&action, replaces);
        }
    }

    fn reader(&self) -> Option<Arc<dyn Reader>> {
        self.0.clone()
    }
}

/// DST cannot be written: each action counts as failed (one error said why).
pub(super) struct Blocked(pub(super) Option<Arc<dyn Reader>>);

impl Carrier for Blocked {
    fn carry<'scope, 'env>(
        &'env self,
        _scope: &'scope std::thread::Scope<'scope, 'env>,
        actions: crossbeam_channel::Receiver<Action>,
        tally: &mut Tally,
        _: (usize, &Pair, &AtomicU64),
    ) {
        for action in actions {
            if !matches!(action, Action::Record { .. }) {
                tally.summary.failed += 1;
            }
        }
    }

    fn reader(&self) -> Option<Arc<dyn Reader>> {
        self.0.clone()
    }
}

/// What the engine thread accumulates from outcomes: counts, the index, touched folders.
pub(super) struct Tally {
    pub(super) index: IndexWriter,
    pub(super) summary: Summary,
    /// DST folders written into (their mode and mtime must be set again).
    pub(super) touched: HashSet<PathBuf>,
    pub(super) progress: Progress,
    pub(super) started: Instant,
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
            done: Done::Copied | Done::Gzipped | Done::HardLinked,
            name,
            ..
        } = &outcome
            && self.replaces_file(name)
        {
            // New content over an older copy: an update, as well as a file backed up.
            self.summary.updated += 1;
        }
        self.summary
            .record(&outcome, &pair.src, &pair.dst.display());
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
            Outcome::Known { name, record } => self.index.put(name, record),
            Outcome::Deleted { name, .. } => {
                self.index.remove_tree(name);
                self.touch_parent(name);
            }
            Outcome::Renamed { from, to, .. } => {
                self.index.move_tree(from, to);
                self.touch_parent(from);
                self.touch_parent(to);
            }
            Outcome::Failed { .. }
            | Outcome::Interrupted { .. }
            | Outcome::Vanished { .. }
            | Outcome::Unsettled { .. } => {}
        }
        self.progress
            .update(scanned.load(Ordering::Relaxed), &self.summary, self.started);
        if self.index.due() {
            self.index.commit(Some(exec));
        }
    }

    /// Records a worker's announced move in the index: a rename's intent is committed
    /// (after DST's barrier, as every commit) before the worker is let go on.
    fn intend(&mut self, intent: Intent, exec: &Executor) {
        match intent {
            Intent::Rename { from, to, recorded } => {
                self.index.intend_rename(&from, &to);
                self.index.commit(Some(exec));
                let _ = recorded.send(());
            }
            Intent::Failed { from } => self.index.drop_rename(&from),
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

/// Runs `produce` on its own thread, sending actions that this thread carries out
/// (through `jobs` workers), prints, or counts, depending on `mode`; outcomes go into
/// `tally`. Returns what `produce` returned.
pub(super) fn pump<R: Send>(
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

impl Mirror {
    /// Carries out (or prints, or counts) every action in `actions`; see [`pump`].
    pub(super) fn pump_all(&mut self, actions: Vec<Action>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, Meta, Stored};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

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
            dst: crate::config::Dest::Local(PathBuf::from("memory:")),
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
                        attrs: Default::default(),
                        link: None,
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
        let dry = carried(&DryRun(None), src.path(), actions());
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
        let summary = carried(&Blocked(None), src.path(), actions);
        assert_eq!((summary.failed, summary.deleted), (3, 0));
    }
}

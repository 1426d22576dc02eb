//! What `sync` to a remote DST starts before DST is reached ([`Prefetch`]): the walk of
//! SRC, while `ssh` connects, the lock is taken and the index's generation is checked
//! (together a few hundred milliseconds, most of a no-op pass if they came first). The
//! walk's items wait in a channel (at most `WAITING` of them) until the first full pass
//! plans them (it is SRC as it was a moment earlier, which is what any walk gives); a
//! walk cut short (Ctrl-C) says so, so the pass deletes nothing.
//!
//! Only `sync` prefetches: a watcher must install its watches before it walks, and a
//! local DST is reached in a millisecond. The index is not read ahead: a pass reads it
//! folder by folder as the walk needs it (`holdings`).

use crate::engine::scan::{self, ScanRules, Scanned};
use crossbeam_channel::{Receiver, unbounded};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most walked items held while DST is reached (about 100 bytes each, plus the path,
/// so some 10 MB): most of what a walk finds while `ssh` connects. Past it the walk
/// waits for the pass.
const WAITING: usize = 1 << 16;

/// The walk a sync started early, taken by the first full pass.
#[derive(Default)]
pub(super) struct Prefetch {
    pub(super) walk: Option<Walk>,
}

/// SRC, walked on other threads.
pub(super) struct Walk {
    items: Receiver<Scanned>,
    walker: Option<JoinHandle<bool>>,
    /// Set when the items are no longer wanted: the walker stops.
    gone: Arc<AtomicBool>,
}

impl Drop for Walk {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Relaxed);
    }
}

impl Prefetch {
    /// Starts walking `src` with `rules`.
    pub(super) fn start(src: &Path, rules: &ScanRules, stop: &Arc<AtomicBool>) -> Prefetch {
        // Unbounded, so that memory is taken only as items come (a bounded channel
        // makes all its slots at once), with the bound kept by the walker.
        let (tx, items) = unbounded();
        let gone = Arc::new(AtomicBool::new(false));
        let (src, rules, stop) = (src.to_path_buf(), rules.clone(), stop.clone());
        let left = gone.clone();
        let walker = std::thread::spawn(move || {
            let mut complete = true;
            scan::walk_source_parallel(&src, Path::new(""), &rules, scan::walk_workers(), |item| {
                while tx.len() >= WAITING && !left.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if stop.load(Ordering::Relaxed)
                    || left.load(Ordering::Relaxed)
                    || tx.send(item).is_err()
                {
                    complete = false;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            complete
        });
        Prefetch {
            walk: Some(Walk {
                items,
                walker: Some(walker),
                gone,
            }),
        }
    }
}

impl Walk {
    /// Hands every walked item to `visit`, in walk order; false if the walk did not
    /// finish (stopped, or `visit` broke off).
    pub(super) fn feed(mut self, mut visit: impl FnMut(Scanned) -> ControlFlow<()>) -> bool {
        for item in self.items.iter() {
            if visit(item).is_break() {
                return false;
            }
        }
        // Every item is in: the walker has ended.
        self.walker
            .take()
            .is_some_and(|walker| walker.join().unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk stopped (Ctrl-C) before it was over says so: the pass then deletes nothing.
    #[test]
    fn a_stopped_walk_is_not_complete() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::create_dir_all(tmp.path().join(format!("d{i}"))).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(true));
        let prefetch = Prefetch::start(tmp.path(), &ScanRules::default(), &stop);
        assert!(!prefetch.walk.unwrap().feed(|_| ControlFlow::Continue(())));
    }
}

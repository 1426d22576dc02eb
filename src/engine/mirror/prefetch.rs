//! What `sync` to a remote DST starts before DST is reached ([`Prefetch`]): the walk of
//! SRC and the read of the local index, while `ssh` connects, the lock is taken and the
//! index's generation is checked (together a few hundred milliseconds, most of a no-op
//! pass if they came first). Both are read-only and both are checked before use:
//!
//! - the walk's items wait in a channel (at most `WAITING` of them) until the first full pass plans them
//!   (it is SRC as it was a moment earlier, which is what any walk gives); a walk cut
//!   short (Ctrl-C) says so, so the pass deletes nothing;
//! - the records read are used only if the index's files (`index.db` and its WAL) are
//!   exactly as they were before the read began, after the lock is held and the index
//!   refreshed: any write in between (another writer, a refresh that replaced or set the
//!   index aside, a commit) makes the pass read it again.
//!
//! Only `sync` prefetches: a watcher must install its watches before it walks, and a
//! local DST is reached in a millisecond.

use crate::engine::scan::{self, ScanRules, Scanned};
use crate::index::Index;
use crate::model::MirrorState;
use crate::store::layout::INDEX_FILE;
use crossbeam_channel::{Receiver, unbounded};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

/// Most walked items held while DST is reached (about 100 bytes each, plus the path):
/// all of a 100k-file tree, so that the walk is over when the connection is made.
/// Past it the walk waits for the pass.
const WAITING: usize = 1 << 17;

/// The walk and the index read a sync started early; each is taken by the first full
/// pass.
#[derive(Default)]
pub(super) struct Prefetch {
    pub(super) walk: Option<Walk>,
    pub(super) index: Option<Preload>,
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

/// The index's records, read on another thread.
pub(super) struct Preload {
    dir: PathBuf,
    before: Mark,
    loading: JoinHandle<Option<MirrorState>>,
}

impl Prefetch {
    /// Starts walking `src` with `rules` and reading the index in `index_dir` (if
    /// there is one).
    pub(super) fn start(
        src: &Path,
        rules: &ScanRules,
        stop: &Arc<AtomicBool>,
        index_dir: Option<PathBuf>,
    ) -> Prefetch {
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
        let index = index_dir.filter(|d| d.join(INDEX_FILE).exists());
        let index = index.map(|dir| {
            let before = mark(&dir);
            let at = dir.clone();
            let loading = std::thread::spawn(move || {
                // Any failure is met again, and reported, by the pass's own read.
                Index::open_untouched(&at)
                    .ok()
                    .flatten()
                    .and_then(|index| index.load().ok())
            });
            Preload {
                dir,
                before,
                loading,
            }
        });
        Prefetch {
            walk: Some(Walk {
                items,
                walker: Some(walker),
                gone,
            }),
            index,
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

impl Preload {
    /// The records read, if they are the index of `dir` as it is now.
    pub(super) fn take(self, dir: &Path) -> Option<MirrorState> {
        if self.dir != dir || mark(dir) != self.before {
            return None;
        }
        let state = self.loading.join().ok().flatten()?;
        // Written while it was read: the read may be of an older state.
        (mark(dir) == self.before).then_some(state)
    }
}

/// What identifies the contents of an index: device, inode, size and mtime of the
/// database and of its write-ahead log (an empty log, which opening the index makes,
/// is no log: it holds nothing).
type Mark = [Option<(u64, u64, u64, u128)>; 2];

fn mark(dir: &Path) -> Mark {
    let file = INDEX_FILE;
    [file.to_string(), format!("{file}-wal")].map(|name| {
        let m = std::fs::symlink_metadata(dir.join(name))
            .ok()
            .filter(|m| m.len() > 0)?;
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        let mtime = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some((dev, ino, m.len(), mtime.as_nanos()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, Meta, Record, Stored};
    use filetime::FileTime;

    fn rec(size: u64) -> Record {
        Record {
            kind: Kind::File,
            meta: Meta {
                size,
                mtime: FileTime::from_unix_time(1_700_000_000, 0),
                mode: 0o644,
            },
            sha256: None,
            stored: Stored::Plain,
            target: None,
            disk: None,
        }
    }

    /// The records read early are used only while the index is as it was when the read
    /// began: opening it again (as a pass does, under the lock) keeps them; a commit, or
    /// the file replaced (a refresh from the mirror's copy), throws them away.
    #[test]
    fn early_records_are_used_only_if_the_index_did_not_change() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, state) = (tmp.path().join("src"), tmp.path().join("state"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        {
            let (mut index, _) = Index::open(&state).unwrap();
            index.put(Path::new("a"), &rec(1)).unwrap();
            index.commit().unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let start = || Prefetch::start(&src, &ScanRules::default(), &stop, Some(state.clone()));

        // Opened again, nothing written: the early read stands.
        let prefetch = start();
        let (reopened, _) = Index::open(&state).unwrap();
        let state_read = prefetch.index.unwrap().take(&state).unwrap();
        assert!(state_read.contains_key(std::ffi::OsStr::new("a")));
        let mut walked = Vec::new();
        assert!(prefetch.walk.unwrap().feed(|item| {
            walked.push(item.rel().to_path_buf());
            ControlFlow::Continue(())
        }));
        assert_eq!(walked, [PathBuf::new(), PathBuf::from("d")]);

        // A commit meanwhile: read again.
        let prefetch = start();
        let mut index = reopened;
        index.put(Path::new("b"), &rec(2)).unwrap();
        index.commit().unwrap();
        assert!(prefetch.index.unwrap().take(&state).is_none());
        drop(index);

        // The file replaced by another of the same size.
        let prefetch = start();
        let copy = tmp.path().join("copy.db");
        std::fs::copy(state.join(INDEX_FILE), &copy).unwrap();
        std::fs::rename(&copy, state.join(INDEX_FILE)).unwrap();
        assert!(prefetch.index.unwrap().take(&state).is_none());
    }

    /// A walk stopped (Ctrl-C) before it was over says so: the pass then deletes nothing.
    #[test]
    fn a_stopped_walk_is_not_complete() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::create_dir_all(tmp.path().join(format!("d{i}"))).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(true));
        let prefetch = Prefetch::start(tmp.path(), &ScanRules::default(), &stop, None);
        assert!(prefetch.index.is_none());
        assert!(!prefetch.walk.unwrap().feed(|_| ControlFlow::Continue(())));
    }
}

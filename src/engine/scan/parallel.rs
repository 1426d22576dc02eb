//! The source walk on several threads, in the same order as the one-thread walk
//! ([`super::walk`]): workers list folders (one `openat`, `getdents`, an `lstat` per
//! name, `readlink` for a link) ahead of the thread that consumes the walk, which gets
//! every entry in the stable order (sorted per folder, depth first) the planner and the
//! tests rely on. The consumer never waits on work nobody does: a folder it needs that
//! no worker has taken yet it lists itself, so with no workers at all this is the
//! one-thread walk.
//!
//! The same rules as the one-thread walk hold: every folder is opened from its parent's
//! handle with `O_NOFOLLOW` (past [`OPEN_DIRS`] levels, from the root with no symlink
//! allowed on the way: `Dir::dir`), every name is looked at relative to its folder, so a
//! folder swapped for a symlink is never entered and no path is too long. Workers run
//! at most [`AHEAD`] folders ahead of the consumer, which bounds the memory held by
//! listed-but-unread folders and the folder handles open at once (each folder still to
//! be listed holds its parent's handle; folders deeper than `OPEN_DIRS` hold none).
//! A listing queues jobs for at most [`LEAD`] of its folders at a time, and the consumer
//! queues the next ones as it reaches them, so a folder of 40,000 folders costs a job
//! for a few dozen of them, not for all.
//!
//! Why not `jwalk` or the `ignore` crate's parallel walker: both read folders by path
//! (`std::fs::read_dir`), which follows a symlink swapped in for a folder mid-walk and
//! fails past `PATH_MAX`, the two things this walk exists to prevent (issue 12).

use super::{OPEN_DIRS, ScanRules, Scanned, describe_name, error_at, scope_start};
use crate::engine::source::Source;
use crate::model::Kind;
use crate::store::local::beneath::Dir;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::ffi::OsString;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Most folders the workers list ahead of the consumer.
pub const AHEAD: usize = 64;

/// Most folders of one listing with a job queued and not yet reached by the consumer.
const LEAD: usize = AHEAD;

/// A folder to list, found in a listing of its parent.
struct Job {
    /// Its place in the walk's order: the positions of it and of every folder above it
    /// (up to the scope) in their parents' listings. Lower comes first.
    key: Vec<u32>,
    /// Path relative to the source root.
    rel: PathBuf,
    /// Its parent, open (its name there is the last part of `rel`); `None` for a
    /// folder deeper than [`OPEN_DIRS`] levels, opened from the root instead (so deep
    /// trees hold no more handles than the one-thread walk).
    parent: Option<Arc<Dir>>,
    /// Set by whoever lists it (a worker, or the consumer when it gets there first).
    taken: AtomicBool,
    /// The listing, once a worker made it.
    slot: Mutex<Slot>,
    ready: Condvar,
}

/// Where a worker leaves a listing for the consumer.
#[derive(Default)]
struct Slot {
    listing: Option<Listing>,
    /// The consumer waits for it (else nobody is woken: a wake is a system call).
    waiting: bool,
}

/// What a folder holds, in walk order, or why it could not be listed.
type Listing = io::Result<Listed>;

/// A folder's names in walk order, and what it takes to queue jobs for its folders.
struct Listed {
    children: Vec<Child>,
    /// The folder, open, for the jobs of its folders (`None` past `OPEN_DIRS`).
    dir: Option<Arc<Dir>>,
    /// The folder's own place in the walk's order.
    key: Vec<u32>,
    /// Children before this one have had their folders' jobs made.
    queued: usize,
}

/// One name of a listing, and for a folder what to list below it (`None` for a folder
/// whose job is not made yet: see [`LEAD`]).
struct Child {
    /// Taken by the consumer when it visits it.
    item: Option<Scanned>,
    below: Option<Arc<Job>>,
}

impl Listed {
    /// Makes jobs for the folders from `self.queued` on until `lead` of them wait
    /// between `from` and the end, and returns the new ones.
    fn make_jobs(&mut self, from: usize, lead: usize) -> Vec<Arc<Job>> {
        let mut waiting = self.children[from..self.queued.max(from)]
            .iter()
            .filter(|c| c.below.is_some())
            .count();
        let mut made = Vec::new();
        while waiting < lead && self.queued < self.children.len() {
            let at = self.queued;
            self.queued += 1;
            let child = &mut self.children[at];
            let Some(Scanned::Entry(entry)) = &child.item else {
                continue;
            };
            if entry.kind != Kind::Dir || child.below.is_some() {
                continue;
            }
            let mut key = Vec::with_capacity(self.key.len() + 1);
            key.extend_from_slice(&self.key);
            key.push(at as u32);
            let job = Arc::new(Job {
                key,
                rel: entry.rel.clone(),
                parent: self.dir.clone(),
                taken: AtomicBool::new(false),
                slot: Mutex::default(),
                ready: Condvar::new(),
            });
            child.below = Some(job.clone());
            made.push(job);
            waiting += 1;
        }
        made
    }
}

/// Puts `jobs` in the workers' queue.
fn enqueue(shared: &Shared<'_>, jobs: Vec<Arc<Job>>) {
    if jobs.is_empty() {
        return;
    }
    let mut queue = lock(&shared.queue);
    queue
        .jobs
        .extend(jobs.into_iter().map(|j| Reverse(Queued(j))));
    let wake = queue.idle > 0;
    drop(queue);
    if wake {
        shared.wake.notify_all();
    }
}

/// A job in the queue, ordered by its place in the walk.
struct Queued(Arc<Job>);

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.key.cmp(&other.0.key)
    }
}

/// The workers' queue: the folder the consumer needs soonest comes out first.
#[derive(Default)]
struct Queue {
    jobs: BinaryHeap<Reverse<Queued>>,
    /// Folders taken by workers and not yet read by the consumer.
    ahead: usize,
    /// Workers waiting for a job or for room (else nobody is woken).
    idle: usize,
    /// The consumer is finished (or stopped): workers end.
    done: bool,
}

struct Shared<'a> {
    src: &'a Source,
    rules: &'a ScanRules,
    queue: Mutex<Queue>,
    /// Workers wait here for a job or for room ahead.
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere is propagated by the thread scope; the data stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// As [`super::walk`], with `workers` threads listing folders ahead of `visit` (which
/// runs on the calling thread and sees the same items in the same order).
pub fn walk(
    src: &Source,
    scope: &Path,
    rules: &ScanRules,
    workers: usize,
    mut visit: impl FnMut(Scanned) -> ControlFlow<()>,
) {
    let whole = scope.as_os_str().is_empty();
    if !whole && rules.covers(scope) {
        return;
    }
    // The scope itself, as the one-thread walk finds it.
    let (item, dir) = scope_start(src, scope, whole, &rules.kept);
    if visit(item).is_break() {
        return;
    }
    let dir = match dir {
        Some(Ok(dir)) => dir,
        Some(Err(error)) => {
            let _ = visit(error_at(scope, error));
            return;
        }
        None => return,
    };
    let shared = Shared {
        src,
        rules,
        queue: Mutex::new(Queue::default()),
        wake: Condvar::new(),
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| work(&shared));
        }
        let depth = scope.components().count();
        // The scope's handle may be a clone of the root's, read before: listed from
        // the start.
        let first = list(&shared, Ok(dir), scope, &[], depth, false);
        consume(&shared, first, scope, &mut visit);
        lock(&shared.queue).done = true;
        shared.wake.notify_all();
    });
}

/// The consumer: depth first through the listings, each one got as it is reached.
fn consume(
    shared: &Shared<'_>,
    first: Listing,
    scope: &Path,
    visit: &mut impl FnMut(Scanned) -> ControlFlow<()>,
) {
    // Each level: its listing and the next child to visit.
    let mut stack: Vec<(Listed, usize)> = match first {
        Ok(listed) => vec![(listed, 0)],
        Err(error) => {
            let _ = visit(error_at(scope, error));
            return;
        }
    };
    while let Some((listed, next)) = stack.last_mut() {
        let at = *next;
        if at == listed.children.len() {
            stack.pop();
            continue;
        }
        *next += 1;
        // Jobs for the folders coming next in this listing, before this child's own
        // walk (the workers list them meanwhile).
        let jobs = listed.make_jobs(at, LEAD);
        enqueue(shared, jobs);
        let child = &mut listed.children[at];
        let below = child.below.take();
        if let Some(item) = child.item.take()
            && visit(item).is_break()
        {
            return;
        }
        let Some(job) = below else {
            continue;
        };
        match take(shared, &job) {
            Ok(listed) => stack.push((listed, 0)),
            Err(error) => {
                if visit(error_at(&job.rel, error)).is_break() {
                    return;
                }
            }
        }
    }
}

/// The listing of `job` for the consumer: made here if no worker took it yet, else
/// waited for.
fn take(shared: &Shared<'_>, job: &Job) -> Listing {
    if !job.taken.swap(true, Ordering::AcqRel) {
        return run(shared, job);
    }
    let mut slot = lock(&job.slot);
    loop {
        if let Some(listing) = slot.listing.take() {
            drop(slot);
            let mut queue = lock(&shared.queue);
            queue.ahead -= 1;
            let wake = queue.idle > 0;
            drop(queue);
            if wake {
                shared.wake.notify_one();
            }
            return listing;
        }
        slot.waiting = true;
        slot = job.ready.wait(slot).unwrap_or_else(PoisonError::into_inner);
    }
}

/// A worker: takes the folder the consumer will need soonest, while there is room
/// ahead, lists it and hands the listing over.
fn work(shared: &Shared<'_>) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if queue.done {
                    return;
                }
                if queue.ahead < AHEAD
                    && let Some(Reverse(Queued(job))) = queue.jobs.pop()
                {
                    // Taken by the consumer already: that copy of it is stale.
                    if job.taken.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    queue.ahead += 1;
                    break job;
                }
                queue.idle += 1;
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                queue.idle -= 1;
            }
        };
        let listing = run(shared, &job);
        let mut slot = lock(&job.slot);
        slot.listing = Some(listing);
        if slot.waiting {
            drop(slot);
            job.ready.notify_one();
        }
    }
}

/// Opens and lists the folder of `job`.
fn run(shared: &Shared<'_>, job: &Job) -> Listing {
    let dir = match (&job.parent, job.rel.file_name()) {
        (Some(parent), Some(name)) => parent.child(name),
        // Deep: from the root, never through a symlink.
        _ => shared.src.dir(&job.rel),
    };
    let depth = job.rel.components().count();
    list(shared, dir, &job.rel, &job.key, depth, true)
}

/// Lists the open folder `dir` (at `rel`, `depth` levels below the root): every name in
/// order, described, and for each folder a job queued for the workers. A `fresh`
/// handle (just opened, for this listing only) is read through itself.
fn list(
    shared: &Shared<'_>,
    dir: io::Result<Dir>,
    rel: &Path,
    key: &[u32],
    depth: usize,
    fresh: bool,
) -> Listing {
    let dir = dir?;
    let mut names: Vec<OsString> = if fresh {
        dir.entries_once()?
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    } else {
        dir.names()?
    };
    names.sort_unstable();
    // Handles for the folders below, while they are few levels down.
    let dir: Result<Arc<Dir>, Dir> = if depth < OPEN_DIRS {
        Ok(Arc::new(dir))
    } else {
        Err(dir)
    };
    let mut children = Vec::with_capacity(names.len());
    for name in names {
        let child_rel = rel.join(&name);
        if shared.rules.leaves_out(&child_rel) {
            continue;
        }
        let item = match &dir {
            Ok(shared_dir) => describe_name(shared_dir, &name, child_rel, &shared.rules.kept),
            Err(own) => describe_name(own, &name, child_rel, &shared.rules.kept),
        };
        children.push(Child {
            item: Some(item),
            below: None,
        });
    }
    let mut listed = Listed {
        children,
        dir: dir.ok(),
        key: key.to_vec(),
        queued: 0,
    };
    let jobs = listed.make_jobs(0, LEAD);
    enqueue(shared, jobs);
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::filter::Excludes;

    fn both(root: &Path, scope: &str, rules: &ScanRules) -> (Vec<String>, Vec<String>) {
        let show = |item: Scanned| match item {
            Scanned::Entry(e) => format!(
                "{} {:?} {} {:?}",
                e.rel.display(),
                e.kind,
                e.meta.size,
                e.target
            ),
            Scanned::Error { rel, error } => format!("ERR {} {:?}", rel.display(), error.kind()),
        };
        let src = Source::open(root).unwrap();
        let mut one = Vec::new();
        super::super::walk(&src, Path::new(scope), rules, |item| {
            one.push(show(item));
            ControlFlow::Continue(())
        });
        let mut many = Vec::new();
        for workers in [0, 1, 3] {
            let mut got = Vec::new();
            walk(&src, Path::new(scope), rules, workers, |item| {
                got.push(show(item));
                ControlFlow::Continue(())
            });
            if workers > 0 {
                assert_eq!(got, many, "{workers} workers");
            }
            many = got;
        }
        (one, many)
    }

    /// The parallel walk yields what the one-thread walk yields, in the same order:
    /// sorted per folder, depth first (so `a`, `a/x`, `a.txt`, not `a`, `a.txt`,
    /// `a/x`), with excludes, skips, links (never followed) and special files, for the
    /// whole tree and for a scope.
    #[cfg(unix)]
    #[test]
    fn yields_the_one_thread_walks_items_in_its_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for i in 0..40 {
            let dir = root.join(format!("d{}/s{}", i % 7, i % 3));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}.txt")), "x".repeat(i)).unwrap();
            std::fs::write(dir.join(format!("f{i}.tmp")), "t").unwrap();
        }
        std::fs::create_dir_all(root.join("a/x")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::create_dir_all(root.join("skipped/in")).unwrap();
        std::os::unix::fs::symlink("..", root.join("a/x/up")).unwrap();
        std::os::unix::fs::symlink("d0", root.join("to_d0")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        let rules = ScanRules {
            excludes: Excludes::new(&["*.tmp"]).unwrap(),
            skip: vec![PathBuf::from("skipped")],
            kept: Default::default(),
        };
        let (one, many) = both(root, "", &rules);
        assert_eq!(one, many);
        let a = one.iter().position(|l| l.starts_with("a Dir")).unwrap();
        assert!(one[a + 1].starts_with("a/x Dir"), "{one:?}");
        assert!(one[a + 2].starts_with("a/x/up Symlink"), "{one:?}");
        assert!(one[a + 3].starts_with("a.txt File"), "{one:?}");
        assert!(
            !one.iter()
                .any(|l| l.contains(".tmp") || l.contains("skipped"))
        );
        assert!(one.iter().any(|l| l.starts_with("fifo Special")));
        assert_eq!(both(root, "d3", &rules).0, both(root, "d3", &rules).1);
        assert_eq!(
            both(root, "a/x/up", &rules).0,
            both(root, "a/x/up", &rules).1
        );
    }

    /// A tree deeper than [`OPEN_DIRS`] levels and longer than `PATH_MAX` is walked whole
    /// and in order, as by the one-thread walk.
    #[cfg(target_os = "linux")]
    /// A folder of more folders than one listing makes jobs for at once ([`LEAD`]):
    /// the consumer makes the rest as it reaches them, and the walk still yields every
    /// item, in the one-thread walk's order.
    #[test]
    fn a_folder_of_more_folders_than_its_lead_yields_every_item_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let wide = LEAD * 3 + 5;
        for i in 0..wide {
            let dir = root.join(format!("w/d{i:03}"));
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            std::fs::write(dir.join("f.txt"), "x").unwrap();
            std::fs::write(dir.join("sub/g.txt"), "y").unwrap();
        }
        let (one, many) = both(root, "", &ScanRules::default());
        assert_eq!(one, many);
        assert_eq!(one.len(), 2 + wide * 4, "{one:?}");
    }

    #[test]
    fn walks_trees_deeper_than_its_handles_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let name = "n".repeat(120);
        let mut here = Dir::open_root(tmp.path()).unwrap();
        for _ in 0..OPEN_DIRS + 20 {
            rustix::fs::mkdirat(&here, name.as_str(), rustix::fs::Mode::RWXU).unwrap();
            rustix::fs::mkdirat(&here, "side", rustix::fs::Mode::RWXU).unwrap();
            here = here.child(std::ffi::OsStr::new(&name)).unwrap();
        }
        let (one, many) = both(tmp.path(), "", &ScanRules::default());
        assert_eq!(one.len(), 1 + 2 * (OPEN_DIRS + 20));
        assert_eq!(one, many);
    }

    /// The consumer stopping early ends the walk (the workers too).
    #[test]
    fn stops_when_the_consumer_breaks() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..200 {
            std::fs::create_dir_all(tmp.path().join(format!("d{i}/e"))).unwrap();
        }
        let src = Source::open(tmp.path()).unwrap();
        let mut seen = 0;
        walk(&src, Path::new(""), &ScanRules::default(), 2, |_| {
            seen += 1;
            if seen == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(seen, 10);
    }
}

//! Side-by-side timing of source walks (issue 15): datasafe's own walks (one thread,
//! and workers listing ahead of the consumer) against `jwalk`, the `ignore` crate's
//! parallel walker and `walkdir`, on trees made beforehand (`scripts/bench_walk.sh`
//! makes them and runs this).
//!
//! Every walker does the same work: one `lstat` per entry, a `readlink` per symlink,
//! the fields datasafe keeps ([`Meta::of`]: size, mtime, mode) read off the metadata,
//! and every entry handed to one consuming thread, which folds its path relative to the
//! root into a checksum. The sorted walkers (ours, jwalk with `sort(true)`, walkdir with
//! `sort_by_file_name`) must yield the same paths in the same order: the first run of
//! each walker checks that, and every run checks the entry count. `ignore` has no
//! sorted parallel mode, so its entries arrive unsorted (checked as a set only).
//!
//! The walkers run interleaved (round `r` starts with walker `r mod n`), so a burst of
//! load from other processes on the machine is spread over all of them; the table shows
//! medians of wall time and of CPU time (user + system of this process), and the ratio
//! of our parallel walk's time to each, of the medians and of the fastest runs (under
//! load from others the fastest run is the one least disturbed). It deliberately does not use criterion: its
//! per-benchmark runs are sequential, which on a shared machine puts each walker in a
//! different load window.
//!
//! Usage: `cargo bench --bench walk -- [--rounds N] DIR...`

use datasafe::engine::scan::{self, ScanRules, Scanned};
use datasafe::model::Meta;
use std::ffi::OsStr;
use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the consumer learns from one walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Summary {
    entries: u64,
    /// Sum of sizes (a check that metadata was read, and something the optimiser keeps).
    bytes: u64,
    /// Symlinks whose target was read.
    links: u64,
    /// A hash of the relative paths in the order they came (FNV-1a, chained).
    ordered: u64,
    /// The sum of each path's own hash: the same whatever the order.
    unordered: u64,
}

impl Summary {
    fn add(&mut self, rel: &Path, meta: &Meta, target: Option<&Path>) {
        let h = fnv(rel.as_os_str());
        self.entries += 1;
        self.bytes = self.bytes.wrapping_add(meta.size);
        self.links += u64::from(target.is_some());
        self.ordered = (self.ordered ^ h).wrapping_mul(0x0000_0100_0000_01b3);
        self.unordered = self.unordered.wrapping_add(h);
        black_box(meta);
    }
}

fn fnv(s: &OsStr) -> u64 {
    s.as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// One walker of the comparison.
struct Walker {
    name: &'static str,
    /// Threads it uses, as shown in the table.
    threads: String,
    sorted: bool,
    run: fn(&Path, usize) -> Summary,
}

fn rel_of<'a>(root: &Path, path: &'a Path) -> &'a Path {
    // Every walker yields paths under the root it was given.
    path.strip_prefix(root).unwrap_or(path)
}

/// lstat and readlink by path, as the crates' walkers must.
fn look(path: &Path) -> Option<(Meta, Option<PathBuf>)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let target = if meta.file_type().is_symlink() {
        std::fs::read_link(path).ok()
    } else {
        None
    };
    Some((Meta::of(&meta), target))
}

fn datasafe_one(root: &Path, _workers: usize) -> Summary {
    let mut s = Summary::default();
    scan::walk_source(root, Path::new(""), &ScanRules::default(), |item| {
        if let Scanned::Entry(e) = item {
            s.add(&e.rel, &e.meta, e.target.as_deref());
        }
        ControlFlow::Continue(())
    });
    s
}

fn datasafe_parallel(root: &Path, workers: usize) -> Summary {
    let mut s = Summary::default();
    let rules = ScanRules::default();
    scan::walk_source_parallel(root, Path::new(""), &rules, workers, |item| {
        if let Scanned::Entry(e) = item {
            s.add(&e.rel, &e.meta, e.target.as_deref());
        }
        ControlFlow::Continue(())
    });
    s
}

/// jwalk's per-entry state: what `process_read_dir` looked up on a rayon thread.
type Looked = Option<(Meta, Option<PathBuf>)>;

fn jwalk_sorted(root: &Path, workers: usize) -> Summary {
    let walk = jwalk::WalkDirGeneric::<((), Looked)>::new(root)
        .sort(true)
        .skip_hidden(false)
        .follow_links(false)
        .parallelism(jwalk::Parallelism::RayonNewPool(workers))
        // On the rayon threads, so the lstat and readlink run in parallel (calling
        // `metadata()` in the consuming loop would make them one-threaded).
        .process_read_dir(|_, _, _, children| {
            for child in children.iter_mut().flatten() {
                child.client_state = look(&child.path());
            }
        });
    let mut s = Summary::default();
    for mut entry in walk.into_iter().flatten() {
        let looked = match entry.client_state.take() {
            Some(looked) => Some(looked),
            // The root is not passed to process_read_dir.
            None if entry.depth == 0 => look(&entry.path()),
            None => None,
        };
        if let Some((meta, target)) = looked {
            let path = entry.path();
            s.add(rel_of(root, &path), &meta, target.as_deref());
        }
    }
    s
}

fn ignore_parallel(root: &Path, workers: usize) -> Summary {
    let (tx, rx) = crossbeam_channel::bounded::<(PathBuf, Meta, Option<PathBuf>)>(4096);
    let walk = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .threads(workers)
        .build_parallel();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            walk.run(|| {
                let tx = tx.clone();
                Box::new(move |entry| {
                    if let Ok(entry) = entry
                        && let Some((meta, target)) = look(entry.path())
                        && tx.send((entry.into_path(), meta, target)).is_err()
                    {
                        return ignore::WalkState::Quit;
                    }
                    ignore::WalkState::Continue
                })
            });
        });
        let mut s = Summary::default();
        for (path, meta, target) in rx {
            s.add(rel_of(root, &path), &meta, target.as_deref());
        }
        s
    })
}

fn walkdir_sorted(root: &Path, _workers: usize) -> Summary {
    let mut s = Summary::default();
    for entry in walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if let Some((meta, target)) = look(entry.path()) {
            s.add(rel_of(root, entry.path()), &meta, target.as_deref());
        }
    }
    s
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn bench_tree(root: &Path, rounds: usize, walkers: &[Walker], workers: usize) {
    // One run each to warm the caches and check that they agree.
    let reference = (walkers[0].run)(root, workers);
    for w in walkers {
        let s = (w.run)(root, workers);
        assert_eq!(
            (s.entries, s.bytes, s.links, s.unordered),
            (
                reference.entries,
                reference.bytes,
                reference.links,
                reference.unordered
            ),
            "{} saw other entries than {}",
            w.name,
            walkers[0].name
        );
        if w.sorted {
            assert_eq!(
                s.ordered, reference.ordered,
                "{} walks in another order",
                w.name
            );
        }
    }
    let n = walkers.len();
    let mut wall = vec![Vec::with_capacity(rounds); n];
    let mut cpu = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let (t0, c0) = (Instant::now(), cpu_time());
            let s = (walkers[i].run)(root, workers);
            wall[i].push(t0.elapsed());
            cpu[i].push(cpu_time() - c0);
            assert_eq!(s.entries, reference.entries);
        }
    }
    let wall: Vec<(Duration, Duration, Duration)> = wall
        .iter_mut()
        .map(|v| {
            let m = median(v);
            (m, v[0], v[v.len() - 1])
        })
        .collect();
    let cpu: Vec<Duration> = cpu.iter_mut().map(|v| median(v)).collect();
    let (ours, ours_min) = (wall[0].0, wall[0].1);
    println!(
        "\n{}: {} entries ({} links), {} rounds, medians",
        root.display(),
        reference.entries,
        reference.links,
        rounds
    );
    println!(
        "| walker | threads | order | wall ms median (min–max) | CPU ms | ours ÷ it, median | ours ÷ it, min | entries/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, w) in walkers.iter().enumerate() {
        let (m, lo, hi) = wall[i];
        println!(
            "| {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.2}× | {:.2}× | {:.2} M |",
            w.name,
            w.threads,
            if w.sorted { "sorted" } else { "unsorted" },
            ms(m),
            ms(lo),
            ms(hi),
            ms(cpu[i]),
            ours.as_secs_f64() / m.as_secs_f64(),
            ours_min.as_secs_f64() / lo.as_secs_f64(),
            reference.entries as f64 / m.as_secs_f64() / 1e6,
        );
    }
}

fn main() {
    let mut rounds = 11;
    let mut dirs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds takes a number");
            }
            // `cargo bench` passes `--bench` to every bench binary.
            a if a.starts_with("--") => {}
            dir => dirs.push(PathBuf::from(dir)),
        }
    }
    if dirs.is_empty() {
        eprintln!(
            "usage: cargo bench --bench walk -- [--rounds N] DIR... (see scripts/bench_walk.sh)"
        );
        return;
    }
    let workers = scan::walk_workers();
    let walkers = [
        Walker {
            name: "datasafe walk_source_parallel",
            threads: format!("{workers} + consumer"),
            sorted: true,
            run: datasafe_parallel,
        },
        Walker {
            name: "datasafe walk_source",
            threads: "1".into(),
            sorted: true,
            run: datasafe_one,
        },
        Walker {
            name: "jwalk (sort, lstat in process_read_dir)",
            threads: format!("{workers} rayon + consumer"),
            sorted: true,
            run: jwalk_sorted,
        },
        Walker {
            name: "ignore build_parallel (filters off)",
            threads: format!("{workers} + consumer"),
            sorted: false,
            run: ignore_parallel,
        },
        Walker {
            name: "walkdir (sort_by_file_name)",
            threads: "1".into(),
            sorted: true,
            run: walkdir_sorted,
        },
    ];
    for dir in &dirs {
        bench_tree(dir, rounds, &walkers, workers);
    }
}

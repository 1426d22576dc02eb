//! Throughput benchmarks of the engine's CPU-bound pieces: walking a source tree,
//! planning entries against a mirror state, SHA-256 hashing and gzip level 6.
//!
//! Run with `cargo bench --bench engine` (a full run takes well under a minute);
//! `cargo bench --bench engine -- hash` runs one group. End-to-end comparisons with
//! rsync, tar | pigz and cp live in `scripts/bench.sh`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datasafe::engine::plan::{self, Decision, PlanOptions};
use datasafe::engine::scan::{ScanRules, Scanned, walk_source};
use datasafe::hash::{CHUNK, hash_reader};
use datasafe::model::{Entry, Kind, Meta};
use datasafe::model::{MirrorState, Record};
use filetime::FileTime;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::hint::black_box;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Files in the scanned tree.
const SCAN_FILES: usize = 5_000;
/// Entries the planner decides on per iteration.
const PLAN_ENTRIES: usize = 100_000;
/// Bytes hashed per iteration.
const HASH_BYTES: usize = 64 << 20;
/// Bytes gzipped per iteration (gzip is ~20x slower than SHA-256; keep runs short).
const GZIP_BYTES: usize = 8 << 20;

/// Short runs: these are throughput figures, not micro-optimisation evidence.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// A small deterministic PRNG (xorshift64*), so the benches need no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Text-like bytes with a quarter of random noise in every 4 KiB, like
/// `scripts/mktree.py` makes: compressible, but not trivially.
fn half_compressible(len: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words: Vec<Vec<u8>> = (0..2000)
        .map(|_| {
            let n = 2 + rng.below(8);
            (0..n).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 4096);
    while out.len() < len {
        let mut text = 0;
        while text < 3072 {
            let w = &words[rng.below(words.len())];
            out.extend_from_slice(w);
            out.push(b' ');
            text += w.len() + 1;
        }
        for _ in 0..1024 / 8 {
            out.extend_from_slice(&rng.next().to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A tree of `files` small files spread over nested folders (~10 files per folder).
fn make_tree(root: &Path, files: usize) {
    let dirs: Vec<PathBuf> = (0..files.div_ceil(10))
        .map(|i| root.join(format!("d{}", i % 20)).join(format!("dir{i}")))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 0..files {
        let path = dirs[i % dirs.len()].join(format!("file{i}.dat"));
        std::fs::write(path, format!("{i}\n")).unwrap();
    }
}

fn bench_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    make_tree(dir.path(), SCAN_FILES);
    let rules = ScanRules::default();
    let mut entries = 0u64;
    walk_source(dir.path(), std::path::Path::new(""), &rules, |_| {
        entries += 1;
        ControlFlow::Continue(())
    });
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(entries));
    g.bench_function(BenchmarkId::new("walk_source", entries), |b| {
        b.iter(|| {
            let mut n = 0u64;
            walk_source(dir.path(), std::path::Path::new(""), &rules, |item| {
                if let Scanned::Entry(e) = item {
                    n += e.meta.size;
                }
                ControlFlow::Continue(())
            });
            black_box(n)
        });
    });
    g.finish();
}

/// 100k source entries (one folder per 10 files, like a real tree) and a mirror state
/// that holds every one of them as it is: the no-op resync's planning work.
fn synthetic_state(n: usize) -> (Vec<Entry>, MirrorState) {
    let mut rng = Rng(42);
    let mut entries = Vec::with_capacity(n);
    let mut state = MirrorState::with_capacity_and_hasher(n, Default::default());
    for i in 0..n {
        let (rel, kind) = if i % 11 == 0 {
            (
                PathBuf::from(format!("d{}/dir{}", i % 97, i / 11)),
                Kind::Dir,
            )
        } else {
            (
                PathBuf::from(format!("d{}/dir{}/file{i}.dat", i % 97, i / 11)),
                Kind::File,
            )
        };
        let meta = Meta {
            size: if kind == Kind::File {
                rng.next() % 65_536
            } else {
                4096
            },
            mtime: FileTime::from_unix_time(
                1_700_000_000 + (rng.next() % 1_000_000) as i64,
                (rng.next() % 1_000_000_000) as u32,
            ),
            mode: if kind == Kind::File { 0o644 } else { 0o755 },
        };
        let entry = Entry {
            rel,
            kind,
            meta,
            target: None,
            attrs: Default::default(),
            link: None,
        };
        let record = Record {
            kind,
            meta,
            sha256: None,
            stored: datasafe::model::Stored::Plain,
            target: None,
            disk: None,
            attrs: Default::default(),
            link: None,
        };
        state.insert(entry.rel.clone().into_os_string(), record);
        entries.push(entry);
    }
    (entries, state)
}

fn bench_plan(c: &mut Criterion) {
    let (entries, state) = synthetic_state(PLAN_ENTRIES);
    let opts = PlanOptions {
        compress: false,
        checksum: false,
        delete: true,
        whole_second_mtimes: false,
        owners: false,
        kept: Default::default(),
        hard_links: true,
    };
    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(entries.len() as u64));
    // What the scanner thread does per entry: its name in DST, the lookup, the decision.
    g.bench_function(BenchmarkId::new("plan_entry", entries.len()), |b| {
        b.iter(|| {
            let mut unchanged = 0usize;
            for entry in &entries {
                let Some(name) = plan::target_name(entry, &opts) else {
                    continue;
                };
                let known = state.get(name.as_os_str());
                if matches!(plan::plan_entry(entry, known, &opts), Decision::Unchanged) {
                    unchanged += 1;
                }
            }
            assert_eq!(unchanged, entries.len());
            black_box(unchanged)
        });
    });
    g.finish();
}

fn bench_hash(c: &mut Criterion) {
    let data = half_compressible(HASH_BYTES);
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(BenchmarkId::new("sha256", "64MiB"), |b| {
        b.iter(|| black_box(hash_reader(black_box(&data[..])).unwrap()));
    });
    g.finish();
}

fn bench_gzip(c: &mut Criterion) {
    let data = half_compressible(GZIP_BYTES);
    let mut g = c.benchmark_group("gzip");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(BenchmarkId::new("level6", "8MiB"), |b| {
        let mut out = Vec::with_capacity(data.len());
        b.iter(|| {
            out.clear();
            // Fed in CHUNK-sized writes, as the executor does.
            let mut enc = GzEncoder::new(&mut out, Compression::new(6));
            for chunk in data.chunks(CHUNK) {
                enc.write_all(chunk).unwrap();
            }
            enc.finish().unwrap();
            black_box(out.len())
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_scan, bench_plan, bench_hash, bench_gzip
}
criterion_main!(benches);

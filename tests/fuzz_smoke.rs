//! The fuzz targets' short run for CI, on stable and without cargo-fuzz: each target's
//! body (`datasafe::fuzzing`, the same code the libFuzzer targets in `fuzz/` call) gets
//! the committed seeds (`fuzz/seeds/TARGET`), every input that once broke it
//! (`fuzz/regressions/TARGET`), and a few thousand inputs made from them by a fixed-seed
//! generator: random bytes, and seeds mutated by flips, overwrites, insertions, deletions,
//! splices and (for the config) TOML tokens. The long, coverage-guided run is
//! `scripts/fuzz.sh`.

use crate::common;

use common::faults::Rng;
use datasafe::fuzzing;
use std::path::{Path, PathBuf};

/// Every file in `fuzz/seeds/TARGET` and `fuzz/regressions/TARGET`, sorted by path.
fn committed(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            if path.is_file() {
                let data = std::fs::read(&path).unwrap();
                files.push((path, data));
            }
        }
    }
    files.sort();
    files
}

/// One mutation of `input`, in the spirit of libFuzzer's: a few edits, each at a random
/// place, drawing new material from random bytes, the other seeds and `tokens`.
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = [0, 0xff, 0x7f, 0x80, b'0', b'.', b'_', b'"'][rng.below(8)];
            }
            2 => {
                let n = 1 + rng.below(8);
                let junk = rng.bytes(n);
                out.splice(at..at, junk);
            }
            3 if !out.is_empty() => {
                let n = 1 + rng.below(16.min(out.len()));
                let from = rng.below(out.len() - n + 1);
                out.drain(from..from + n);
            }
            4 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let n = rng.below(other.len() - from + 1).min(64);
                out.splice(at..at, other[from..from + n].iter().copied());
            }
            5 if !tokens.is_empty() => {
                let token = tokens[rng.below(tokens.len())];
                out.splice(at..at, token.iter().copied());
            }
            _ if out.len() > 1 => {
                // Cut the input short, as a truncated file would be.
                out.truncate(rng.below(out.len()));
            }
            _ => {}
        }
    }
    out
}

/// The committed inputs, then `random` random ones and `mutated` mutations of the
/// committed ones, each passed to `run`.
fn drive(
    target: &str,
    random: usize,
    mutated: usize,
    tokens: &[&[u8]],
    mut run: impl FnMut(&[u8]),
) {
    let committed = committed(target);
    assert!(
        !committed.is_empty(),
        "no seeds for {target} in fuzz/seeds/{target}"
    );
    for (path, data) in &committed {
        eprintln!("{target}: {}", path.display());
        run(data);
    }
    let seeds: Vec<Vec<u8>> = committed.into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng(0x00da_7a5a_fe00 ^ target.len() as u64);
    for _ in 0..random {
        let len = rng.below(256);
        let data = rng.bytes(len);
        run(&data);
    }
    for _ in 0..mutated {
        let base = &seeds[rng.below(seeds.len())];
        let data = mutate(&mut rng, base, &seeds, tokens);
        run(&data);
    }
}

const TOML_TOKENS: &[&[u8]] = &[
    b"[[mirror]]\n",
    b"[mirror]\n",
    b"source = \"/a\"\n",
    b"dest = \"/b\"\n",
    b"dest = \"~\"\n",
    b"source = \"$HOME/x\"\n",
    b"exclude = [\"**\", \"{a,\"]\n",
    b"keep_versions = \"staggered\"\n",
    b"keep_versions = 18446744073709551615\n",
    b"debounce = \"99999999999999h\"\n",
    b"rescan = \"0\"\n",
    b"jobs = 4294967296\n",
    b"max_delete = -1\n",
    b"enabled = false\n",
    b"name = \"\\u0000\"\n",
    b"\"\"\"",
    b"'''",
    b"= [[[[[[[[",
    b"{ a = { b = { c = 1 } } }",
    b"\r\n",
    b"#",
    b"\xef\xbb\xbf",
    b"\xff",
];

const NAME_TOKENS: &[&[u8]] = &[
    b"_20261124_153045",
    b"-1",
    b"-4294967296",
    b".gz",
    b".",
    b"/",
    b"_",
    b"_00000000_000000",
    b"_99991231_235960",
];

#[test]
fn config_parser_never_panics() {
    drive("config", 1000, 4000, TOML_TOKENS, fuzzing::config);
}

#[test]
fn version_names_never_panic_and_round_trip() {
    drive(
        "version_name",
        2000,
        6000,
        NAME_TOKENS,
        fuzzing::version_name,
    );
}

#[test]
fn index_loader_never_panics() {
    let scratch = tempfile::tempdir().unwrap();
    drive("index", 100, 1500, &[], |data| {
        fuzzing::index(data, scratch.path())
    });
}

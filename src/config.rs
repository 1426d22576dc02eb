//! The command line turned into one immutable [`Config`], validated before anything runs:
//! SRC must be a directory, SRC and DST must not be the same directory in any spelling,
//! SRC must not lie inside DST, and DST inside SRC is left out of the scan. Every error
//! here is a usage error (exit 2) and touches nothing.

use crate::cli::{MirrorArgs, OutputArgs, SyncArgs, TimingArgs, WatchArgs};
use crate::filter::Excludes;
use crate::names::{esc, io_message};
use crate::plan::PlanOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How much the terminal shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Warnings and errors only.
    Quiet,
    /// One line per operation.
    Normal,
    /// Also what was skipped and why.
    Verbose,
    /// Everything, for debugging.
    Trace,
}

/// Where output goes and how much of it.
#[derive(Clone, Debug)]
pub struct Output {
    /// Print the plan instead of carrying it out.
    pub dry_run: bool,
    /// End stdout with one JSON object.
    pub json: bool,
    /// Every log line, timestamped, appended here.
    pub log_file: Option<PathBuf>,
    /// Errors only, timestamped, appended here.
    pub error_log: Option<PathBuf>,
    /// Terminal verbosity.
    pub verbosity: Verbosity,
}

/// One source directory and its mirror.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The source root, canonical (symlinks and `.` resolved).
    pub src: PathBuf,
    /// The mirror root, as the user gave it but made absolute.
    pub dst: PathBuf,
    /// DST relative to SRC when DST lies inside SRC: left out of the scan.
    pub dst_in_src: Option<PathBuf>,
}

/// Everything a `sync` run needs, settled.
#[derive(Clone, Debug)]
pub struct Config {
    /// What to mirror where.
    pub pair: Pair,
    /// Compress, checksum, delete.
    pub plan: PlanOptions,
    /// Paths left out.
    pub excludes: Excludes,
    /// Worker threads.
    pub jobs: usize,
    /// Output settings.
    pub output: Output,
}

/// A usage or configuration error: one line, exit code 2, nothing touched.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Settles the arguments of `datasafe sync`.
    pub fn from_sync_args(args: &SyncArgs) -> Result<Config, ConfigError> {
        let pair = Pair::resolve(&args.src, &args.dst)?;
        Ok(Config {
            pair,
            plan: plan_options(&args.mirror),
            excludes: Excludes::new(&args.mirror.exclude)
                .map_err(|e| ConfigError(e.to_string()))?,
            jobs: jobs(&args.mirror),
            output: output(&args.output),
        })
    }
}

/// When a watcher acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a path must be quiet before it is mirrored.
    pub debounce: Duration,
    /// How often a full rescan runs; `None` for never.
    pub rescan: Option<Duration>,
    /// The longest a path that never goes quiet waits.
    pub max_wait: Duration,
}

impl Config {
    /// Settles the arguments of `datasafe watch`.
    pub fn from_watch_args(args: &WatchArgs) -> Result<(Config, Timing), ConfigError> {
        let pair = Pair::resolve(&args.src, &args.dst)?;
        let cfg = Config {
            pair,
            plan: plan_options(&args.mirror),
            excludes: Excludes::new(&args.mirror.exclude).map_err(|e| ConfigError(e.to_string()))?,
            jobs: jobs(&args.mirror),
            output: output(&args.output),
        };
        Ok((cfg, timing(&args.timing)?))
    }
}

fn timing(t: &TimingArgs) -> Result<Timing, ConfigError> {
    if t.debounce.is_zero() {
        return Err(ConfigError(
            "--debounce must be more than 0; try 50ms".to_string(),
        ));
    }
    Ok(Timing {
        debounce: t.debounce,
        rescan: (!t.rescan.is_zero()).then_some(t.rescan),
        max_wait: t.max_wait.max(t.debounce),
    })
}

fn plan_options(m: &MirrorArgs) -> PlanOptions {
    PlanOptions {
        compress: m.compress,
        checksum: m.checksum,
        delete: !m.no_delete,
    }
}

fn jobs(m: &MirrorArgs) -> usize {
    match m.jobs {
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(2, usize::from),
    }
}

fn output(o: &OutputArgs) -> Output {
    Output {
        dry_run: o.dry_run,
        json: o.json,
        log_file: o.log_file.clone(),
        error_log: o.error_log.clone(),
        verbosity: match (o.quiet, o.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Trace,
        },
    }
}

impl Pair {
    /// Checks SRC and DST and works out how they relate.
    pub fn resolve(src: &Path, dst: &Path) -> Result<Pair, ConfigError> {
        let src_canon = match std::fs::canonicalize(src) {
            Ok(p) if p.is_dir() => p,
            Ok(_) => {
                return Err(ConfigError(format!(
                    "source {} is not a directory; give the folder to mirror",
                    esc(src)
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError(format!(
                    "source {} does not exist; check the path",
                    esc(src)
                )));
            }
            Err(e) => {
                return Err(ConfigError(format!(
                    "source {} cannot be read: {}",
                    esc(src),
                    io_message(&e)
                )));
            }
        };
        if let Ok(m) = std::fs::metadata(dst)
            && !m.is_dir()
        {
            return Err(ConfigError(format!(
                "destination {} exists and is not a directory; choose a folder",
                esc(dst)
            )));
        }
        let dst_canon = canonical_even_if_missing(dst).map_err(|e| {
            ConfigError(format!(
                "destination {} cannot be resolved: {}",
                esc(dst),
                io_message(&e)
            ))
        })?;
        if dst_canon == src_canon {
            return Err(ConfigError(format!(
                "source {} and destination {} are the same directory; choose another destination",
                esc(src),
                esc(dst)
            )));
        }
        if src_canon.starts_with(&dst_canon) {
            return Err(ConfigError(format!(
                "source {} is inside destination {}; mirroring would delete it, choose another destination",
                esc(src),
                esc(dst)
            )));
        }
        let dst_in_src = dst_canon
            .strip_prefix(&src_canon)
            .ok()
            .map(Path::to_path_buf);
        Ok(Pair {
            src: src_canon,
            dst: std::path::absolute(dst).unwrap_or_else(|_| dst.to_path_buf()),
            dst_in_src,
        })
    }
}

/// The canonical form of `path`; for a path that does not exist yet, the canonical form
/// of its nearest existing ancestor with the rest appended.
fn canonical_even_if_missing(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(canon) => {
                let mut out = canon;
                out.extend(rest.iter().rev());
                return Ok(out);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(e);
                };
                rest.push(name);
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_directory_in_any_spelling_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for dst in [src.clone(), src.join("."), src.join("../src")] {
            let err = Pair::resolve(&src, &dst).unwrap_err();
            assert!(err.0.contains("same directory"), "{}", err.0);
        }
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&src, &link).unwrap();
            assert!(Pair::resolve(&src, &link).is_err());
        }
    }

    #[test]
    fn nesting_is_detected_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let pair = Pair::resolve(&src, &src.join("backup/mirror")).unwrap();
        assert_eq!(pair.dst_in_src, Some(PathBuf::from("backup/mirror")));
        let err = Pair::resolve(&src, dir.path()).unwrap_err();
        assert!(err.0.contains("inside destination"), "{}", err.0);
    }

    #[test]
    fn missing_or_non_directory_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Pair::resolve(&missing, &dir.path().join("d")).unwrap_err();
        assert!(
            err.0.contains("does not exist") && err.0.contains("nope"),
            "{}",
            err.0
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = Pair::resolve(&file, &dir.path().join("d")).unwrap_err();
        assert!(err.0.contains("not a directory"), "{}", err.0);
    }
}

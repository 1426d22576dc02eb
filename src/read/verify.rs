//! `datasafe verify`: re-reads every file a mirror's index says DST holds (un-gzipping
//! the `.gz` ones), hashes it and compares it with the SHA-256 the index recorded; checks
//! that symlinks point where they did and that folders exist; lists what DST holds that
//! the index does not; and with `--source`, compares the mirror with the source as it is
//! now. It repairs nothing (the next `sync` does) and never writes to DST: the index is
//! read with [`index::load_untouched`], and every name is looked at through the
//! mirror's store ([`Reader::look`]), which reports a symlink planted in the mirror
//! instead of reading through it.
//!
//! Shape: the index is loaded; DST is listed and (for `--source`) the source walked, in
//! parallel; what needs no content ([`compare_source`], [`not_in_index`]) is pure. Then a
//! producer thread feeds one [`Job`] per index record through a bounded channel to
//! `--jobs` workers, and this thread, the only one that counts and prints, receives each
//! [`Checked`]. A problem found while a writer (`watch`) changes the mirror gets a second
//! look against the index as it is by then, so a file replaced mid-check is not reported.
//!
//! An object store lists every object with its ETag ([`Reader::inventory`]): there,
//! unless `--deep`, that one listing replaces the walk of DST, and a record whose stamp
//! and size it matches is intact without a download ([`by_listing`]); the rest are read
//! as above.

use crate::config::filter::Excludes;
use crate::config::{
    self, Config, ConfigError, Dest, MirrorOverrides, NotAFolder, Output, OutputOverrides,
    Overrides, Pair, Settings, Verbosity,
};
use crate::engine::repair::Check;
use crate::engine::scan::{self, ScanRules, Scanned};
use crate::engine::source;
use crate::hash::{self, Digest};
use crate::index::{self, Index};
use crate::model::{Entry, Kept, Kind, LinkKey};
use crate::model::{MirrorState, Record, Stored};
use crate::output::logging::{self, DETAIL, SUMMARY};
use crate::output::names::{count_of, esc, human_bytes, io_message, quote_word, shell_word};
use crate::output::report::{Progress, Summary};
use crate::read::Outcome;
use crate::read::history::index_dir;
use crate::store::layout::{self, STATE_DIR};
use crate::store::local::Local;
use crate::store::{Found, Inventoried, ReadFile, Reader, Step};
use crossbeam_channel::bounded;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

/// Capacity of the channels between the producer, the workers and the collector.
const QUEUE: usize = 256;

/// What `datasafe verify` is asked to do: its command line, as the runner hands it over.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The mirror to check, here or on another machine (else the pairs of a config
    /// file).
    pub dst: Option<Dest>,
    /// The config file whose pairs to check.
    pub config: Option<PathBuf>,
    /// `--source`: `Some(Some(SRC))` with a DST, `Some(None)` for each pair's own.
    pub source: Option<Option<PathBuf>>,
    /// Write again what the check found wrong.
    pub repair: bool,
    /// With `repair`: let held deletions through.
    pub force: bool,
    /// What the comparison with the source leaves out (with a DST).
    pub exclude: Vec<String>,
    /// Hashing threads.
    pub jobs: Option<u32>,
    /// `--deep`: read and hash every file even where a listing could vouch for it (an
    /// object store's ETags).
    pub deep: bool,
    /// End stdout with one JSON object.
    pub json: bool,
    /// Append every line to this file.
    pub log_file: Option<PathBuf>,
    /// How many `-v`.
    pub verbose: u8,
    /// Only problems and the summary.
    pub quiet: bool,
    /// `--ssh-command`: how a remote DST is reached (over `$DATASAFE_SSH_COMMAND` and a
    /// config's `ssh_command`; a DST given here carries it already).
    pub ssh_command: Option<String>,
}

/// Why one mirror could not be checked (or repaired) at all. Said as one line where it
/// happens (a run over several pairs goes on with the others).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// DST is a file (or another non-folder).
    #[error("destination {} is not a directory; give the mirror's folder", esc(.0))]
    NotADirectory(PathBuf),
    /// Nothing is at DST.
    #[error("destination {} does not exist; check the path (or mount its drive)", esc(.0))]
    Missing(PathBuf),
    /// DST cannot be looked at or opened.
    #[error("destination {} cannot be read: {}", esc(.path), io_message(.source))]
    Unreadable {
        /// DST.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// DST has no index: nothing to check against.
    #[error("no index at {}: run {command} first", esc(.index))]
    NoIndex {
        /// Where the index should be.
        index: PathBuf,
        /// The `datasafe sync` command that makes one.
        command: String,
    },
    /// The index is there but cannot be read.
    #[error("{0}; a mirror cannot be verified without its index (datasafe sync rebuilds it)")]
    Index(#[source] index::IndexError),
    /// `--repair` could not start: the source is gone, DST cannot be written.
    #[error("{0}")]
    Repair(Box<dyn std::error::Error + Send + Sync>),
    /// A remote DST's host cannot be reached: ssh's reason, naming the host.
    #[error("{}", io_message(.0))]
    Unreachable(io::Error),
}

/// Everything a verify run needs, settled from the command line (and config file).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The mirrors to check, in order.
    pub targets: Vec<Target>,
    /// Hashing threads.
    pub jobs: usize,
    /// Read every file (`--deep`), even where a listing vouches for it.
    pub deep: bool,
    /// Where output goes and how much of it.
    pub output: Output,
    /// Compare each mirror with its source (`--source`).
    pub with_source: bool,
    /// The targets come from a config file: lines name their pair, and a pair that
    /// cannot be checked does not stop the others.
    pub named: bool,
    /// Write again what the check found wrong (`--repair`).
    pub repair: bool,
    /// How to name the run in a command that repairs it (`--config FILE`).
    pub config_file: Option<PathBuf>,
    /// The `--exclude` patterns given with DST, for the command that repairs it.
    pub excludes: Vec<String>,
    /// The `--ssh-command` given, for the command that repairs it.
    pub ssh_command: Option<String>,
}

/// One mirror to check.
#[derive(Clone, Debug)]
pub struct Target {
    /// How lines name it when several are checked.
    pub name: String,
    /// False: skipped, and said so.
    pub enabled: bool,
    /// The mirror's root: a folder here (canonical), or on another machine.
    pub dst: Dest,
    /// The source to compare it with (`--source`).
    pub source: Option<Source>,
    /// The pair's settings, for `--repair` (the engine writes with them).
    pub config: Option<Config>,
}

/// A source to compare a mirror with.
#[derive(Clone, Debug)]
pub struct Source {
    /// The source's root (canonical).
    pub root: PathBuf,
    /// What a sync of this pair leaves out: its excludes, and DST when it lies inside.
    pub rules: ScanRules,
    /// The pair does not mirror deletions (`--no-delete`, `delete = false`): what the
    /// mirror holds beyond the source is what it keeps, not a problem.
    pub keeps_deleted: bool,
}

impl Plan {
    /// Settles `datasafe verify DST [--source SRC]` or `datasafe verify [--config FILE]
    /// [--source]`. Every error is a usage error (exit 2).
    pub fn from_request(args: &Request) -> Result<Plan, ConfigError> {
        let output_args = OutputOverrides {
            json: args.json,
            log_file: args.log_file.clone(),
            verbose: args.verbose,
            quiet: args.quiet,
            ..OutputOverrides::default()
        };
        let Some(dst) = &args.dst else {
            return Plan::from_file(args, &output_args);
        };
        if args.repair && !matches!(args.source, Some(Some(_))) {
            return Err(ConfigError(
                "--repair writes again from the source: give it with --source SRC".to_string(),
            ));
        }
        // What the mirror's index says of how it is kept; for --source (and --repair)
        // only. A remote DST that cannot be reached is said here, once.
        let facts = match &args.source {
            Some(Some(_)) => MirrorFacts::read(dst).map_err(|e| ConfigError(io_message(&e)))?,
            _ => MirrorFacts::default(),
        };
        let source = match &args.source {
            None => None,
            Some(None) => {
                return Err(ConfigError(
                    "--source needs the source folder when one DST is given: --source SRC"
                        .to_string(),
                ));
            }
            Some(Some(src)) => {
                let pair = Pair::resolve(src, dst)?;
                Some(Source {
                    root: pair.src,
                    rules: ScanRules {
                        excludes: Excludes::new(&args.exclude)
                            .map_err(|e| ConfigError(e.to_string()))?,
                        skip: pair.dst_in_src.into_iter().collect(),
                        kept: Default::default(),
                    },
                    keeps_deleted: facts.no_delete,
                })
            }
        };
        if source.is_none() && !args.exclude.is_empty() {
            return Err(ConfigError(
                "--exclude says what the comparison with the source leaves out: give it \
                 with --source SRC"
                    .to_string(),
            ));
        }
        // Canonical: a DST reached through a symlink is that folder (the index is opened
        // with O_NOFOLLOW on every component). A remote one is its URL.
        let given = dst.display();
        let dst = match dst {
            Dest::Local(dst) => Dest::Local(
                std::fs::canonicalize(dst)
                    .or_else(|_| std::path::absolute(dst))
                    .unwrap_or_else(|_| dst.clone()),
            ),
            remote => remote.clone(),
        };
        let config = match (&args.source, args.repair) {
            (Some(Some(src)), true) => Some(repair_config(src, &given, facts, args)?),
            _ => None,
        };
        Ok(Plan {
            jobs: config::jobs_for(&dst, args.jobs, None),
            deep: args.deep,
            targets: vec![Target {
                name: dst.to_string(),
                enabled: true,
                dst,
                source,
                config,
            }],
            output: Output {
                dry_run: false,
                json: args.json,
                log_file: args.log_file.clone(),
                error_log: None,
                verbosity: match (args.quiet, args.verbose) {
                    (true, _) => Verbosity::Quiet,
                    (false, 0) => Verbosity::Normal,
                    (false, _) => Verbosity::Verbose,
                },
            },
            with_source: args.source.is_some(),
            named: false,
            repair: args.repair,
            config_file: None,
            excludes: args.exclude.clone(),
            ssh_command: args.ssh_command.clone(),
        })
    }

    /// The pairs of a config file; with `--source`, each compared with its own source.
    fn from_file(args: &Request, output: &OutputOverrides) -> Result<Plan, ConfigError> {
        if let Some(Some(src)) = &args.source {
            return Err(ConfigError(format!(
                "--source {} needs a DST; with a config file give --source alone and each \
                 pair is compared with its own source",
                esc(src)
            )));
        }
        let path = match &args.config {
            Some(path) => path.clone(),
            None => match config::default_path() {
                Some(path) if path.exists() => path,
                Some(path) => {
                    return Err(ConfigError(format!(
                        "give DST, or a config file with --config (there is none at {})",
                        esc(&path)
                    )));
                }
                None => {
                    return Err(ConfigError(
                        "give DST, or a config file with --config".to_string(),
                    ));
                }
            },
        };
        let settings =
            Settings::from_file_for_reading(&path, args.jobs, args.ssh_command.as_deref(), output)?;
        // A repair writes from each pair's source, so it compares with it too.
        let with_source = args.source.is_some() || args.repair;
        let targets = settings
            .pairs
            .iter()
            .map(|p| Target {
                name: p.name.clone(),
                enabled: p.enabled,
                dst: p.config.pair.dst.clone(),
                source: with_source.then(|| Source {
                    root: p.config.pair.src.clone(),
                    rules: ScanRules {
                        excludes: p.config.excludes.clone(),
                        skip: p.config.pair.dst_in_src.iter().cloned().collect(),
                        kept: p.config.plan.kept,
                    },
                    keeps_deleted: !p.config.plan.delete,
                }),
                config: args.repair.then(|| {
                    let mut config = p.config.clone();
                    config.guard.force |= args.force;
                    config
                }),
            })
            .collect();
        let jobs = settings.pairs.first().map_or(1, |p| p.config.jobs);
        Ok(Plan {
            targets,
            jobs,
            deep: args.deep,
            output: settings.output,
            with_source,
            named: true,
            repair: args.repair,
            config_file: Some(path),
            excludes: Vec::new(),
            ssh_command: args.ssh_command.clone(),
        })
    }
}

/// What a mirror's index says about how it is mirrored (the last writer's options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MirrorFacts {
    /// Files are stored gzipped (`--compress`).
    compress: bool,
    /// Deletions in the source are not mirrored (`--no-delete`, `delete = false`).
    no_delete: bool,
    /// The writer gave DST's names their source owners (it ran as root, into a store
    /// that keeps owners): only then does a different owner in DST mean something.
    owners: bool,
    /// The extended attributes and ACLs the pair keeps (`--xattrs`, `--acls`).
    kept: Kept,
}

impl MirrorFacts {
    /// Read from `dst`'s index without changing it; the defaults without one, or when
    /// it cannot be read. `Err` only for a remote DST whose host cannot be reached
    /// (connecting refreshes its cached index).
    fn read(dst: &Dest) -> io::Result<MirrorFacts> {
        let store: Box<dyn Reader> = match dst {
            Dest::Local(dst) => match Local::open(dst) {
                Ok(store) => Box::new(store),
                Err(_) => return Ok(MirrorFacts::default()),
            },
            remote => match crate::store::open_reader(remote) {
                Ok(store) => store,
                Err(e) if crate::read::is_unreachable(&e) => return Err(e),
                Err(_) => return Ok(MirrorFacts::default()),
            },
        };
        Ok(MirrorFacts::of(&*store))
    }

    /// Read from the index of the mirror `store` reads, without changing it; the
    /// defaults without one.
    fn of(store: &dyn Reader) -> MirrorFacts {
        let Some(index) = Index::open_untouched(&index_dir(store)).ok().flatten() else {
            return MirrorFacts::default();
        };
        MirrorFacts {
            compress: index.mirror_fact("compress").is_some_and(|v| v == "1"),
            no_delete: index.mirror_fact("delete").is_some_and(|v| v == "0"),
            owners: index.mirror_fact("owners").is_some_and(|v| v == "1"),
            kept: Kept {
                xattrs: index
                    .mirror_fact("xattrs")
                    .is_some_and(|v| v == "user" || v == "all"),
                acls: index.mirror_fact("acls").is_some_and(|v| v == "1"),
                every_namespace: index.mirror_fact("xattrs").is_some_and(|v| v == "all"),
            },
        }
    }

    /// The `sync` flags that say so, each with a leading space.
    fn flags(self) -> String {
        let mut flags = String::new();
        if self.compress {
            flags.push_str(" --compress");
        }
        if self.no_delete {
            flags.push_str(" --no-delete");
        }
        if self.kept.xattrs {
            flags.push_str(" --xattrs");
        }
        if self.kept.acls {
            flags.push_str(" --acls");
        }
        flags
    }
}

/// The settings `sync SRC DST` would use for a mirror repaired from the command line:
/// the defaults, gzipped if the mirror is (`facts`: its index says so), `--jobs` and
/// `--ssh-command` as given.
fn repair_config(
    src: &Path,
    dst: &Path,
    facts: MirrorFacts,
    args: &Request,
) -> Result<Config, ConfigError> {
    let overrides = Overrides {
        mirror: MirrorOverrides {
            compress: facts.compress,
            no_delete: facts.no_delete,
            xattrs: facts.kept.xattrs,
            acls: facts.kept.acls,
            exclude: args.exclude.clone(),
            force: args.force,
            jobs: args.jobs,
            ssh_command: args.ssh_command.clone(),
            ..MirrorOverrides::default()
        },
        output: OutputOverrides {
            json: args.json,
            log_file: args.log_file.clone(),
            verbose: args.verbose,
            quiet: args.quiet,
            ..OutputOverrides::default()
        },
        timing: None,
    };
    let settings = Settings::settle(Some(src), Some(dst), None, &overrides)?;
    settings
        .pairs
        .into_iter()
        .next()
        .map(|p| p.config)
        .ok_or_else(|| ConfigError("no pair to repair".to_string()))
}

/// What is wrong with one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The mirror holds something other than what the index recorded (the reason says
    /// what); also a file that cannot be read.
    Damaged(String),
    /// The index records it; the mirror does not hold it.
    Missing,
    /// The mirror holds it; the index does not know it.
    NotInIndex,
    /// Intact in the mirror, but the source holds something else now.
    DiffersFromSource,
    /// In the source, not in the mirror.
    NotInMirror,
    /// In the mirror, no longer in the source.
    NotInSource,
    /// The source could not be read, so it was not compared.
    UnreadableInSource(String),
}

/// One problem at one path: a line of output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// For mirror problems the name stored in DST (`a.txt.gz`); for source problems the
    /// source's path.
    pub path: PathBuf,
    /// A folder (shown with a trailing `/`).
    pub dir: bool,
    /// What is wrong.
    pub problem: Problem,
}

impl Finding {
    fn new(path: impl Into<PathBuf>, dir: bool, problem: Problem) -> Finding {
        Finding {
            path: path.into(),
            dir,
            problem,
        }
    }

    /// The path as lines and JSON show it.
    fn shown(&self) -> String {
        let slash = if self.dir { "/" } else { "" };
        format!("{}{slash}", esc(&self.path))
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.shown();
        match &self.problem {
            Problem::Damaged(why) => write!(f, "damaged: {path} ({why})"),
            Problem::Missing => write!(f, "missing: {path}"),
            Problem::NotInIndex => write!(f, "not in index: {path}"),
            Problem::DiffersFromSource => write!(f, "differs from source: {path}"),
            Problem::NotInMirror => write!(f, "not in mirror: {path}"),
            Problem::NotInSource => write!(f, "not in source: {path}"),
            Problem::UnreadableInSource(why) => write!(f, "unreadable in source: {path} ({why})"),
        }
    }
}

/// The counts of one mirror (or of all of them).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Files and symlinks found in the mirror and compared (intact or damaged; missing
    /// and unchecked ones are not counted).
    pub files_verified: u64,
    /// Files whose content (or type, or link target) is not what the index recorded.
    pub damaged: u64,
    /// Paths the index records that the mirror does not hold.
    pub missing: u64,
    /// Files read without error but with no SHA-256 recorded to compare with.
    pub unchecked: u64,
    /// Paths in the mirror the index does not know (a folder counts once).
    pub not_in_index: u64,
    /// Intact in the mirror but different in the source now.
    pub differs_from_source: u64,
    /// In the source, not in the mirror (a folder counts once).
    pub not_in_mirror: u64,
    /// In the mirror, gone from the source (a folder counts once).
    pub not_in_source: u64,
    /// Source paths that could not be read.
    pub unreadable_in_source: u64,
    /// Bytes of content hashed (uncompressed; the source's too with `--source`).
    pub bytes_checked: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.files_verified += o.files_verified;
        self.damaged += o.damaged;
        self.missing += o.missing;
        self.unchecked += o.unchecked;
        self.not_in_index += o.not_in_index;
        self.differs_from_source += o.differs_from_source;
        self.not_in_mirror += o.not_in_mirror;
        self.not_in_source += o.not_in_source;
        self.unreadable_in_source += o.unreadable_in_source;
        self.bytes_checked += o.bytes_checked;
    }

    /// True if these counts make a run exit 1. Without `--source`, only damaged and
    /// missing files do; paths unknown to the index are warnings then.
    pub fn failed(&self, with_source: bool) -> bool {
        self.damaged + self.missing > 0
            || (with_source
                && self.not_in_index
                    + self.differs_from_source
                    + self.not_in_mirror
                    + self.not_in_source
                    + self.unreadable_in_source
                    > 0)
    }

    /// How many problems a repair (a `sync --repair` or `verify --repair`) puts right:
    /// all but a source that cannot be read, and files with nothing to check against.
    pub fn repairable(&self) -> u64 {
        self.damaged
            + self.missing
            + self.not_in_index
            + self.differs_from_source
            + self.not_in_mirror
            + self.not_in_source
    }

    /// The counts as the second summary line (and the per-pair lines) show them.
    pub fn line(&self, with_source: bool) -> String {
        let mut line = format!(
            "Damaged: {}, Missing: {}, Unchecked: {}, Not in index: {}",
            self.damaged, self.missing, self.unchecked, self.not_in_index
        );
        if with_source {
            line.push_str(&format!(
                ", Differs from source: {}, Not in mirror: {}, Not in source: {}, Unreadable in source: {}",
                self.differs_from_source,
                self.not_in_mirror,
                self.not_in_source,
                self.unreadable_in_source
            ));
        }
        line
    }
}

/// The paths behind the counts, as shown (escaped), sorted.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Paths {
    /// See [`Counts::damaged`].
    pub damaged: Vec<String>,
    /// See [`Counts::missing`].
    pub missing: Vec<String>,
    /// See [`Counts::not_in_index`].
    pub not_in_index: Vec<String>,
    /// See [`Counts::differs_from_source`].
    pub differs_from_source: Vec<String>,
    /// See [`Counts::not_in_mirror`].
    pub not_in_mirror: Vec<String>,
    /// See [`Counts::not_in_source`].
    pub not_in_source: Vec<String>,
    /// See [`Counts::unreadable_in_source`].
    pub unreadable_in_source: Vec<String>,
}

impl Paths {
    fn sort(&mut self) {
        for list in [
            &mut self.damaged,
            &mut self.missing,
            &mut self.not_in_index,
            &mut self.differs_from_source,
            &mut self.not_in_mirror,
            &mut self.not_in_source,
            &mut self.unreadable_in_source,
        ] {
            list.sort();
        }
    }
}

/// What checking one mirror found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct MirrorReport {
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// The paths behind them.
    pub paths: Paths,
    /// Stored names whose content is wrong (damaged, or intact but not the source's):
    /// what `--repair` has the engine write again even though the index calls them
    /// current. Everything else found, a full pass puts right by itself.
    #[serde(skip)]
    pub rewrite: Vec<PathBuf>,
    /// Stored names whose content is intact but whose owner or attributes are not what
    /// was set: `--repair` sets them again (no copy).
    #[serde(skip)]
    pub reattr: Vec<PathBuf>,
    /// Source paths a mirror never holds (a top-level `.datasafe`), said once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// How the mirror is kept, as its index says: for the command that repairs it.
    #[serde(skip)]
    facts: MirrorFacts,
    /// Why the check stopped before the end: the mirror's host was lost (its reason).
    #[serde(skip)]
    lost: Option<String>,
}

impl MirrorReport {
    /// Counts a finding, keeps its path, and prints and logs its line.
    fn note(&mut self, finding: &Finding) {
        let (count, list) = match finding.problem {
            Problem::Damaged(_) => (&mut self.counts.damaged, &mut self.paths.damaged),
            Problem::Missing => (&mut self.counts.missing, &mut self.paths.missing),
            Problem::NotInIndex => (&mut self.counts.not_in_index, &mut self.paths.not_in_index),
            Problem::DiffersFromSource => (
                &mut self.counts.differs_from_source,
                &mut self.paths.differs_from_source,
            ),
            Problem::NotInMirror => (
                &mut self.counts.not_in_mirror,
                &mut self.paths.not_in_mirror,
            ),
            Problem::NotInSource => (
                &mut self.counts.not_in_source,
                &mut self.paths.not_in_source,
            ),
            Problem::UnreadableInSource(_) => (
                &mut self.counts.unreadable_in_source,
                &mut self.paths.unreadable_in_source,
            ),
        };
        *count += 1;
        list.push(finding.shown());
        let line = finding.to_string();
        let prefix = logging::current_pair().map_or_else(String::new, |n| format!("[{n}] "));
        logging::print_line(false, &format!("{prefix}{line}"));
        log::warn!(target: DETAIL, "{line}");
    }
}

/// `datasafe verify`: checks every target, prints a line per problem (and per pair when
/// there are several) and the summary. [`Outcome::Unusable`]: a mirror could not be
/// checked at all (said here, in the run's log, as it happened).
pub fn run(plan: &Plan, stop: &Arc<AtomicBool>) -> Outcome {
    let started = Instant::now();
    let mut total = Counts::default();
    let mut pairs = Vec::new();
    let mut single = None;
    let mut unusable = false;
    // What `--repair` did, all pairs together.
    let mut repairs = Summary::default();
    let targets = crate::cli::run::enabled_pairs(&plan.targets, stop, |t| (&t.name, t.enabled));
    for target in targets {
        logging::set_pair(plan.named.then(|| Arc::from(target.name.as_str())));
        let result = verify_mirror(target, plan, stop).map(|mut report| {
            report.paths.sort();
            report
        });
        match &result {
            Ok(report) if plan.named => {
                let line = format!(
                    "pair {}: Files verified: {}, {}",
                    target.name,
                    report.counts.files_verified,
                    report.counts.line(plan.with_source)
                );
                logging::set_pair(None);
                logging::clear_progress();
                logging::print_line(false, &line);
                log::info!(target: SUMMARY, "{line}");
            }
            Ok(_) => {}
            Err(message) if plan.named => {
                log::error!("{message}; the other pairs go on");
                unusable = true;
            }
            Err(message) => {
                log::error!("{message}");
                logging::clear_progress();
                return Outcome::Unusable;
            }
        }
        logging::set_pair(None);
        if let Ok(report) = &result {
            total.add(&report.counts);
            if plan.repair
                && !stop.load(Ordering::Relaxed)
                && let Some(cfg) = &target.config
            {
                logging::set_pair(plan.named.then(|| Arc::from(target.name.as_str())));
                let repaired = repair(cfg, report, plan, stop);
                logging::set_pair(None);
                match repaired {
                    Ok(summary) => repairs.add(&target.name, summary, false),
                    Err(message) => {
                        // Nothing could be repaired (an unwritable DST, a missing
                        // source): a fatal error for this pair, as for `sync`.
                        log::error!("{message}");
                        repairs.failed += 1;
                        unusable = true;
                    }
                }
            }
        }
        if plan.named {
            pairs.push(PairJson {
                name: target.name.clone(),
                dst: target.dst.to_string(),
                error: result.as_ref().err().map(ToString::to_string),
                report: result.ok(),
            });
        } else {
            single = result.ok();
        }
    }
    let interrupted = stop.load(Ordering::Relaxed);
    let duration_s = started.elapsed().as_secs_f64();
    let word = if interrupted {
        "interrupted"
    } else {
        "completed"
    };
    let now = crate::output::now();
    logging::clear_progress();
    for line in summary_lines(&total, plan.with_source, word, &now, duration_s) {
        logging::print_line(false, &line);
        log::info!(target: SUMMARY, "{line}");
    }
    let repaired = plan.repair && !interrupted;
    if repaired {
        let line = repair_line(&repairs);
        logging::print_line(false, &line);
        log::info!(target: SUMMARY, "{line}");
    } else if !interrupted && total.failed(plan.with_source) && total.repairable() > 0 {
        let facts = single.as_ref().map(|r| r.facts).unwrap_or_default();
        log::warn!("{}", repair_hint(plan, facts));
    }
    if plan.output.json {
        let json = RunJson {
            counts: &total,
            duration_s,
            interrupted,
            compared_with_source: plan.with_source,
            paths: single.as_ref().map(|r| &r.paths),
            left_out: single.as_ref().map_or(&[][..], |r| &r.left_out[..]),
            pairs,
            repair: repaired.then_some(&repairs),
        };
        let line =
            serde_json::to_string(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        logging::print_line(false, &line);
    }
    if repaired {
        // The mirror is what the source is now, unless a write failed, deletions were
        // held, or the source could not be read.
        let left = repairs.failed + repairs.held_deletions + total.unreadable_in_source;
        return outcome(
            &Counts {
                damaged: left,
                ..Counts::default()
            },
            plan.with_source,
            interrupted,
            unusable,
        );
    }
    outcome(&total, plan.with_source, interrupted, unusable)
}

/// Writes again, through the sync engine, what `report` found wrong in the mirror
/// `cfg` describes; a full pass over the rest puts right what is missing, unknown to
/// the index or behind the source. Returns what the engine did.
fn repair(
    cfg: &Config,
    report: &MirrorReport,
    plan: &Plan,
    stop: &Arc<AtomicBool>,
) -> Result<Summary, VerifyError> {
    config::check_source(&cfg.pair.src).map_err(|e| VerifyError::Repair(e.into()))?;
    let show_progress = plan.output.verbosity > Verbosity::Quiet;
    let mut mirror = crate::engine::mirror::Mirror::open_to_write(cfg, stop, show_progress)
        .map_err(|e| VerifyError::Repair(e.into()))?;
    let check = Check::Found {
        rewrite: report.rewrite.clone(),
        attrs: report.reattr.clone(),
    };
    mirror.reconcile_checking(Path::new(""), &check);
    mirror.commit();
    Ok(mirror.into_summary())
}

/// The line that says what `--repair` did.
fn repair_line(s: &Summary) -> String {
    format!(
        "Repair completed: Files backed up: {}, Updated: {}, Deleted: {}, Failed: {}, Bytes copied: {} ({})",
        s.copied,
        s.updated,
        s.deleted,
        s.failed,
        s.bytes_copied,
        human_bytes(s.bytes_copied)
    )
}

/// The command that repairs what a run without `--repair` found (`facts`: how the one
/// mirror checked is kept).
fn repair_hint(plan: &Plan, facts: MirrorFacts) -> String {
    if let Some(file) = &plan.config_file {
        return format!(
            "to write again what is wrong, run: datasafe verify --config {} --repair",
            shell_word(file)
        );
    }
    let Some(target) = plan.targets.first() else {
        return String::new();
    };
    // The advice must not undo how the mirror is kept: gzipped, without deletions, or
    // leaving out what the check left out.
    // Both commands keep what the check left out, and reach the mirror as this run did.
    let excludes: String = plan
        .excludes
        .iter()
        .map(|p| format!(" --exclude {}", quote_word(p)))
        .chain(ssh_flag(plan, &target.dst))
        .collect();
    let flags = format!("{}{excludes}", facts.flags());
    let dst = target.dst.display();
    match &target.source {
        Some(src) => format!(
            "to write again what is wrong, run: datasafe sync --repair{flags} {} {} (with the \
             options you mirror it with), or datasafe verify --source {} --repair{excludes} {}",
            shell_word(&src.root),
            shell_word(&dst),
            shell_word(&src.root),
            shell_word(&dst)
        ),
        None => format!(
            "to write again what is wrong, run: datasafe sync --repair{flags} SRC {} (SRC: \
             the folder it mirrors, with the options you mirror it with)",
            shell_word(&dst)
        ),
    }
}

/// ` --ssh-command CMD` for a command that reaches the remote `dst` as this run did
/// (nothing when the flag was not given: the environment or config says it again).
fn ssh_flag(plan: &Plan, dst: &Dest) -> Option<String> {
    let ssh = plan
        .ssh_command
        .as_deref()
        .filter(|_| dst.remote().is_some())?;
    Some(format!(" --ssh-command {}", quote_word(ssh)))
}

/// True if the first files found in the mirror (up to 200, its state folder left out)
/// are all gzipped (`NAME.gz`): a mirror kept with `--compress`, as far as a mirror
/// without its index can tell.
fn looks_gzipped(store: &dyn Reader) -> bool {
    let (mut files, mut gzipped) = (0, true);
    let _ = store.walk(Path::new(""), false, &mut |found| {
        if found.name == Path::new(STATE_DIR) {
            return Step::Prune;
        }
        if found.kind == Kind::File {
            files += 1;
            let name = found.name.file_name().unwrap_or_default();
            gzipped &= name.as_encoded_bytes().ends_with(b".gz");
        }
        if files >= 200 || !gzipped {
            Step::Stop
        } else {
            Step::Go
        }
    });
    files > 0 && gzipped
}

/// How the run went: interruption first, then a mirror that could not be checked,
/// then problems found.
pub fn outcome(total: &Counts, with_source: bool, interrupted: bool, unusable: bool) -> Outcome {
    if interrupted {
        Outcome::Interrupted
    } else if unusable {
        Outcome::Unusable
    } else if total.failed(with_source) {
        Outcome::Problems
    } else {
        Outcome::Clean
    }
}

/// The two summary lines, in the fixed form sync's summary has.
pub fn summary_lines(
    total: &Counts,
    with_source: bool,
    word: &str,
    now: &str,
    duration_s: f64,
) -> [String; 2] {
    [
        format!(
            "Verify {word} at {now}, Duration: {duration_s:.2} seconds, Files verified: {}",
            total.files_verified
        ),
        format!(
            "{}, Bytes checked: {} ({})",
            total.line(with_source),
            total.bytes_checked,
            human_bytes(total.bytes_checked)
        ),
    ]
}

/// The `--json` line.
#[derive(Serialize)]
struct RunJson<'a> {
    #[serde(flatten)]
    counts: &'a Counts,
    duration_s: f64,
    interrupted: bool,
    compared_with_source: bool,
    /// One mirror: its paths. Several: each pair has its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    paths: Option<&'a Paths>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    left_out: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pairs: Vec<PairJson>,
    /// What `--repair` did.
    #[serde(skip_serializing_if = "Option::is_none")]
    repair: Option<&'a Summary>,
}

/// One pair in the `--json` line of a config-file run.
#[derive(Serialize)]
struct PairJson {
    name: String,
    dst: String,
    /// Why the pair could not be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    report: Option<MirrorReport>,
}

/// Checks one mirror. `Err` is one line saying why it could not be checked at all.
fn verify_mirror(
    target: &Target,
    plan: &Plan,
    stop: &AtomicBool,
) -> Result<MirrorReport, VerifyError> {
    // A remote mirror's breaker says when its host was given up on.
    let (store, breaker): (Arc<dyn Reader>, _) = match &target.dst {
        Dest::Local(dst) => {
            check_dst(dst)?;
            let store = Local::open(dst).map_err(|source| VerifyError::Unreadable {
                path: dst.clone(),
                source,
            })?;
            (Arc::new(store), None)
        }
        Dest::Sftp(_) | Dest::S3(_) => {
            let breaker = crate::read::open_remote(&target.dst).map_err(|e| match e {
                crate::read::Unopened::Unreachable(e) => VerifyError::Unreachable(e),
                crate::read::Unopened::NotAFolder(e) => not_a_folder(target.dst.display(), e),
            })?;
            // Neither SFTP nor S3 can hash a file on the server: every byte comes over,
            // unless a listing vouches for what the index recorded.
            match (&target.dst, plan.deep) {
                (Dest::S3(bucket), false) => log::info!(
                    "verify checks the listing of {} against the index (ETag and size); a \
                     file that does not match is downloaded and hashed (--deep downloads \
                     every file)",
                    bucket.url()
                ),
                _ => log::info!(
                    "verify downloads every file from {} to hash it",
                    target.dst.host().unwrap_or_default()
                ),
            }
            (breaker.clone(), Some(breaker))
        }
    };
    let store: &dyn Reader = &*store;
    let state_dir = index_dir(store);
    let seen = Fingerprint::of(&state_dir);
    let state = match index::load_untouched(&state_dir) {
        Ok(Some(state)) => state,
        Ok(None) => {
            let src = target
                .source
                .as_ref()
                .map_or_else(|| "SRC".to_string(), |s| shell_word(&s.root));
            // A plain sync would turn a gzipped mirror into a plain one.
            let compress = if looks_gzipped(store) {
                " --compress"
            } else {
                ""
            };
            return Err(VerifyError::NoIndex {
                index: store.display(&layout::index()),
                command: format!(
                    "datasafe sync{compress}{} {src} {}",
                    ssh_flag(plan, &target.dst).unwrap_or_default(),
                    shell_word(&target.dst.display())
                ),
            });
        }
        Err(e) => return Err(VerifyError::Index(e)),
    };
    let mut report = MirrorReport {
        facts: MirrorFacts::of(store),
        ..MirrorReport::default()
    };
    let mut progress = Progress::start(plan.output.verbosity > Verbosity::Quiet);

    // DST's names and the source's entries, read side by side. Where the store lists
    // every object with its stamp (S3's ETags), that one listing vouches for the records
    // it matches, and only the others are read (unless --deep).
    let (listed, walked) = std::thread::scope(|s| {
        let listing = s.spawn(|| match store.inventory().filter(|_| !plan.deep) {
            Some(listed) => listed.map(|listed| {
                let names: Vec<(PathBuf, bool)> = listed
                    .iter()
                    .map(|i| (i.name.clone(), i.kind == Kind::Dir))
                    .collect();
                let by_name = listed.into_iter().map(|i| (i.name.clone(), i)).collect();
                (not_in_index(&names, &state), Some(by_name))
            }),
            None => Ok((not_in_index(&list_mirror(store, stop), &state), None)),
        });
        let walked = target.source.as_ref().map(|src| walk(src, stop));
        // A panic in the listing thread is a bug; pass it on rather than hide it.
        let listed = listing
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (listed, walked)
    });
    let (unknown, listing): (_, Option<Listing>) = listed.map_err(|e| match e {
        e if crate::read::is_connection_lost(&e) => VerifyError::Unreachable(e),
        source => VerifyError::Unreadable {
            path: target.dst.display(),
            source,
        },
    })?;
    if stop.load(Ordering::Relaxed) {
        return Ok(report);
    }
    let mut compare = HashMap::new();
    if let Some(src) = &target.source
        && std::fs::symlink_metadata(src.root.join(STATE_DIR)).is_ok()
    {
        // Never mirrored: DST keeps its own state under that name. Not a failure (no
        // sync could change it), but never passed over in silence either.
        let path = esc(&src.root.join(STATE_DIR)).to_string();
        // With --repair the engine says it when it opens the mirror.
        let say = if plan.repair {
            log::Level::Debug
        } else {
            log::Level::Warn
        };
        log::log!(
            say,
            "{path} is not in the mirror: a source's top-level {STATE_DIR} folder is never \
             mirrored, as the mirror keeps its own state under that name; to keep a copy of \
             it, mirror it on its own (datasafe sync {path} ANOTHER_FOLDER)"
        );
        report.left_out.push(path);
    }
    if let (Some(src), Some(walked)) = (&target.source, walked) {
        for (rel, error) in &walked.unreadable {
            report.note(&Finding::new(
                rel,
                false,
                Problem::UnreadableInSource(error.clone()),
            ));
        }
        let unreadable: Vec<PathBuf> = walked.unreadable.into_iter().map(|(p, _)| p).collect();
        let matched = compare_source(&walked.entries, &unreadable, &state, |rel| {
            src.rules.covers(rel)
        });
        let mut kept = 0u64;
        for finding in &matched.findings {
            if src.keeps_deleted && finding.problem == Problem::NotInSource {
                kept += 1;
                continue;
            }
            report.note(finding);
        }
        if kept > 0 {
            log::info!(
                "{} not in the source, kept by the mirror (it does not mirror deletions)",
                count_of(kept, "path")
            );
        }
        compare = matched
            .files
            .into_iter()
            .filter_map(|(name, rel)| Some((name, (walked.tree.clone()?, rel))))
            .collect();
    }

    let groups = link_groups(&state);
    // Every record, in name order, through the workers.
    let mut jobs: Vec<Job> = state
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, record)| {
            let source = compare.remove(&name);
            Job {
                name: PathBuf::from(name),
                record,
                source,
            }
        })
        .collect();
    jobs.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    // The progress line counts what the summary's "Files verified" counts (files and
    // symlinks, not folders), out of all the index records.
    let files = jobs.iter().filter(|j| j.record.kind != Kind::Dir).count();
    let mut second = SecondLook::new(&state_dir, seen);
    let mut buf = Vec::new();
    let modes = matches!(target.dst, Dest::Local(_) | Dest::Sftp(_)) && store.keeps_unix_meta();
    let attrs = AttrCheck::of(report.facts, modes);
    pump(
        store,
        listing.as_ref(),
        &attrs,
        jobs,
        plan.jobs,
        stop,
        |checked| {
            let checked = second.settle(checked, store, &attrs, &mut buf, stop);
            tally(&mut report, checked);
            progress.show(|| progress_line(&report.counts, files));
        },
    );
    if let Some(e) = breaker.as_ref().and_then(|b| b.tripped()) {
        report.lost.get_or_insert_with(|| io_message(&e));
    }
    if let Some(why) = report.lost.take() {
        // What was found so far is said; the rest could not be checked.
        return Err(VerifyError::Unreachable(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            why,
        )));
    }
    if stop.load(Ordering::Relaxed) {
        return Ok(report);
    }
    for finding in unknown {
        // A writer may have recorded it since the index was read.
        if !matches!(second.current(&finding.path), Some(Some(_))) {
            report.note(&finding);
        }
    }
    // Only a local folder's inode numbers say which names are one file (an object's
    // stamp is its ETag, which a copy may change).
    if matches!(target.dst, Dest::Local(_)) {
        check_links(&groups, store, &mut report, &mut second);
    }
    Ok(report)
}

/// Names the index records as one file in DST: the same source file (hard links in
/// SRC) stored in the same form with the same content. Each group is in name order,
/// with two names or more, each name with the inode it was written as (0: not known).
fn link_groups(state: &MirrorState) -> Vec<Vec<(PathBuf, u64)>> {
    type Key = (LinkKey, Stored, Option<Digest>);
    let mut by_file: HashMap<Key, Vec<(PathBuf, u64)>> = HashMap::new();
    for (name, record) in state {
        if record.kind == Kind::File
            && let Some(key) = record.link
        {
            by_file
                .entry((key, record.stored, record.sha256))
                .or_default()
                .push((PathBuf::from(name), record.disk.map_or(0, |d| d.ino)));
        }
    }
    let mut groups: Vec<_> = by_file.into_values().filter(|g| g.len() > 1).collect();
    for group in &mut groups {
        group.sort();
    }
    groups.sort();
    groups
}

/// Checks that each of `groups` is still one file in a local DST: a name that is a file of its own (a copy made by hand, one a writer failed
/// to link) is damaged, and `--repair` makes it a name of the others' file again. The
/// group's file is the inode most of its names are (of those, the first by name). A
/// name already found damaged, gone, or rewritten meanwhile by a writer is left to what
/// was said of it; one whose owner or attributes were found wrong is written again
/// instead of only having them set (its line was said).
fn check_links(
    groups: &[Vec<(PathBuf, u64)>],
    store: &dyn Reader,
    report: &mut MirrorReport,
    second: &mut SecondLook<'_>,
) {
    if groups.is_empty() {
        return;
    }
    let said: HashSet<PathBuf> = report.rewrite.iter().cloned().collect();
    for group in groups {
        let mut now = Vec::new();
        for (name, recorded) in group {
            if said.contains(name) {
                continue;
            }
            if let Ok(Some(stat)) = store.stat(name)
                && stat.kind == Kind::File
                && stat.ino != 0
            {
                now.push((name, *recorded, stat.ino));
            }
        }
        let mut names_of: HashMap<u64, usize> = HashMap::new();
        for (_, _, ino) in &now {
            *names_of.entry(*ino).or_default() += 1;
        }
        let Some(most) = names_of.values().copied().max() else {
            continue;
        };
        let Some(&(leader, _, ino)) = now.iter().find(|(_, _, ino)| names_of[ino] == most) else {
            continue;
        };
        for &(name, recorded, found) in &now {
            if found == ino {
                continue;
            }
            let rewritten = match second.current(name) {
                Some(Some(record)) => record.disk.map_or(0, |d| d.ino) != recorded,
                Some(None) => true,
                None => false,
            };
            if rewritten {
                continue;
            }
            report.rewrite.push(name.clone());
            if let Some(at) = report.reattr.iter().position(|n| n == name) {
                report.reattr.remove(at);
                continue;
            }
            report.note(&Finding::new(
                name.clone(),
                false,
                Problem::Damaged(format!(
                    "a file of its own, no longer the same file as {}: the source's names \
                     are one file (hard links)",
                    esc(leader)
                )),
            ));
        }
    }
}

/// The progress line: the summary's own count of files verified, out of the files and
/// symlinks the index records, and the bytes read.
fn progress_line(counts: &Counts, files: usize) -> String {
    format!(
        "{}/{files} files verified, {} read",
        counts.files_verified,
        human_bytes(counts.bytes_checked)
    )
}

/// DST must be an existing folder.
fn check_dst(dst: &Path) -> Result<(), VerifyError> {
    config::check_dir(dst).map_err(|e| not_a_folder(dst.to_path_buf(), e))
}

/// Why DST (as shown) is no folder to check.
fn not_a_folder(dst: PathBuf, e: NotAFolder) -> VerifyError {
    match e {
        NotAFolder::NotADirectory => VerifyError::NotADirectory(dst),
        NotAFolder::Missing(_) => VerifyError::Missing(dst),
        NotAFolder::Unreadable(source) => VerifyError::Unreadable { path: dst, source },
    }
}

/// Counts one checked record and prints what is wrong with it.
fn tally(report: &mut MirrorReport, checked: Checked) {
    let Checked {
        job,
        mirror,
        source,
        bytes,
    } = checked;
    report.counts.bytes_checked += bytes;
    let counted = job.record.kind != Kind::Dir;
    match mirror {
        Verdict::Stopped => return,
        Verdict::Lost { why, .. } => {
            report.lost.get_or_insert(why);
            return;
        }
        Verdict::Bad(problem) => {
            if counted && problem != Problem::Missing {
                report.counts.files_verified += 1;
            }
            if matches!(problem, Problem::Damaged(_)) {
                report.rewrite.push(job.name.clone());
            }
            report.note(&Finding::new(
                job.name,
                job.record.kind == Kind::Dir,
                problem,
            ));
            return;
        }
        Verdict::Attrs(why) => {
            if counted {
                report.counts.files_verified += 1;
            }
            report.reattr.push(job.name.clone());
            report.note(&Finding::new(
                job.name.clone(),
                job.record.kind == Kind::Dir,
                Problem::Damaged(why),
            ));
        }
        Verdict::Intact if counted => {
            report.counts.files_verified += 1;
            log::debug!("intact: {}", esc(&job.name));
        }
        Verdict::Intact => {}
        Verdict::Unchecked => match source {
            Some(SourceVerdict::Same | SourceVerdict::Differs) => {
                report.counts.files_verified += 1;
            }
            _ => {
                report.counts.unchecked += 1;
                log::debug!("unchecked: {} (no SHA-256 recorded)", esc(&job.name));
            }
        },
    }
    let logical = || logical_name(&job.name, &job.record);
    match source {
        None | Some(SourceVerdict::Same) => {}
        Some(SourceVerdict::Differs) => {
            report.note(&Finding::new(logical(), false, Problem::DiffersFromSource));
            // Size and mtime match the source's, or a sync would have copied it.
            report.rewrite.push(job.name.clone());
        }
        Some(SourceVerdict::Unreadable(why)) => {
            report.note(&Finding::new(
                logical(),
                false,
                Problem::UnreadableInSource(why),
            ));
        }
    }
}

/// The source path a stored name stands for (`a.txt.gz` stored gzipped → `a.txt`).
fn logical_name(name: &Path, record: &Record) -> PathBuf {
    match record.kind {
        Kind::File => record.stored.source_of(name),
        _ => name.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------------------
// Reading the mirror and the source
// ---------------------------------------------------------------------------------------

/// One index record to check.
#[derive(Debug)]
struct Job {
    /// The name stored in DST.
    name: PathBuf,
    /// What the index says it is.
    record: Record,
    /// The source file to compare its content with (`--source`): the source, open, and
    /// the file's path in it.
    source: Option<(source::Source, PathBuf)>,
}

/// How a record compared with what the mirror holds.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// As recorded.
    Intact,
    /// Read without error, but nothing was recorded to compare the content with.
    Unchecked,
    /// Damaged or missing.
    Bad(Problem),
    /// Content as recorded, owner or attributes not (how, in words): damaged, put right
    /// without a copy.
    Attrs(String),
    /// Ctrl-C came first, or the mirror's host was lost meanwhile.
    Stopped,
    /// The mirror's host was lost: no verdict on this record, and none on the rest.
    /// `again`: the connection died under a read that cannot be sent again (an open
    /// file's); a new look may find a new connection. Otherwise the store already
    /// waited for the host and gave up.
    Lost { why: String, again: bool },
}

/// How the mirror's content compared with the source's.
#[derive(Debug, PartialEq, Eq)]
enum SourceVerdict {
    Same,
    Differs,
    Unreadable(String),
}

/// A job, checked.
#[derive(Debug)]
struct Checked {
    job: Job,
    mirror: Verdict,
    source: Option<SourceVerdict>,
    /// Content bytes hashed.
    bytes: u64,
}

/// Runs `jobs` through `workers` threads; `each` gets every result on this thread.
/// Once a check finds the mirror's host lost ([`Verdict::Lost`]), no further job is
/// started: each would wait as long for the host again.
fn pump(
    store: &dyn Reader,
    listing: Option<&Listing>,
    attrs: &AttrCheck,
    jobs: Vec<Job>,
    workers: usize,
    stop: &AtomicBool,
    mut each: impl FnMut(Checked),
) {
    let (job_tx, job_rx) = bounded::<Job>(QUEUE);
    let (done_tx, done_rx) = bounded::<Checked>(QUEUE);
    let lost = &AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(move || {
            for job in jobs {
                let halted = stop.load(Ordering::Relaxed) || lost.load(Ordering::Relaxed);
                if halted || job_tx.send(job).is_err() {
                    break;
                }
            }
        });
        for _ in 0..workers.max(1) {
            let (rx, tx) = (job_rx.clone(), done_tx.clone());
            s.spawn(move || {
                let mut buf = vec![0u8; hash::CHUNK];
                for job in rx {
                    let checked = match lost.load(Ordering::Relaxed) {
                        true => Checked {
                            job,
                            mirror: Verdict::Stopped,
                            source: None,
                            bytes: 0,
                        },
                        false => {
                            let checked = check(store, listing, attrs, job, &mut buf, stop);
                            match checked.mirror {
                                // The connection died under this file: checked once more,
                                // which waits (within the store's patience) for a new one.
                                Verdict::Lost { again: true, .. } => {
                                    check(store, None, attrs, checked.job, &mut buf, stop)
                                }
                                _ => checked,
                            }
                        }
                    };
                    if matches!(checked.mirror, Verdict::Lost { .. }) {
                        lost.store(true, Ordering::Relaxed);
                    }
                    if tx.send(checked).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx));
        for checked in done_rx {
            each(checked);
        }
    });
}

/// What a store's one listing said of each name ([`Reader::inventory`]).
type Listing = HashMap<PathBuf, Inventoried>;

/// What the listing says of `record` without reading anything: `None` where only a read
/// can tell (no stamp recorded, or one that differs: damage, or a server whose ETags
/// are not MD5s).
fn by_listing(record: &Record, listed: Option<&Inventoried>) -> Option<Verdict> {
    let Some(listed) = listed else {
        return Some(Verdict::Bad(Problem::Missing));
    };
    match (record.kind, listed.kind) {
        (Kind::Dir, Kind::Dir) => Some(Verdict::Intact),
        (Kind::File | Kind::Symlink, Kind::File) => {
            let disk = record.disk?;
            let vouched = disk.ino != 0 && disk.ino == listed.stamp && disk.size == listed.size;
            // A file without a recorded hash is read: that is what says "unchecked".
            let hashed = record.kind == Kind::Symlink || record.sha256.is_some();
            (vouched && hashed).then_some(Verdict::Intact)
        }
        _ => None,
    }
}

/// Checks one record against DST (and the source), reading through `buf`; a record the
/// `listing` vouches for is not read (its recorded hash is its content's).
fn check(
    store: &dyn Reader,
    listing: Option<&Listing>,
    attrs: &AttrCheck,
    job: Job,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
) -> Checked {
    if buf.is_empty() {
        buf.resize(hash::CHUNK, 0);
    }
    let mut bytes = 0;
    let mut digest = None;
    let record = &job.record;
    let listed = listing.and_then(|l| by_listing(record, l.get(&job.name)));
    if listed == Some(Verdict::Intact) {
        digest = record.sha256;
    }
    let mirror = match listed {
        Some(verdict) => verdict,
        None => {
            let (verdict, read) = look_and_read(store, record, &job.name, buf, stop);
            if let Some((d, n)) = read {
                digest = Some(d);
                bytes += n;
            }
            verdict
        }
    };
    // Content as recorded: then owner and attributes as recorded too.
    let mirror = match mirror {
        Verdict::Intact | Verdict::Unchecked => match attrs.differ(store, &job.name, record) {
            Some(why) => Verdict::Attrs(why),
            None => mirror,
        },
        other => other,
    };
    let source = match (&job.source, &mirror, digest) {
        (
            Some((tree, rel)),
            Verdict::Intact | Verdict::Unchecked | Verdict::Attrs(_),
            Some(mine),
        ) => {
            let theirs = tree
                .open_file(rel)
                .and_then(|f| hash::hash_reader_until(f, buf, stop));
            match theirs {
                Ok((d, n)) => {
                    bytes += n;
                    Some(if d == mine {
                        SourceVerdict::Same
                    } else {
                        SourceVerdict::Differs
                    })
                }
                Err(_) if stop.load(Ordering::Relaxed) => None,
                Err(e) => Some(SourceVerdict::Unreadable(io_message(&e))),
            }
        }
        _ => None,
    };
    Checked {
        job,
        mirror,
        source,
        bytes,
    }
}

/// What of a record's owner and attributes is compared with what DST holds: only what
/// the writer set there, so a mirror written by a user (whose files are the user's) or
/// without `--xattrs` raises no alarm.
#[derive(Clone, Copy, Debug, Default)]
struct AttrCheck {
    /// Compare permission bits (a local or SFTP DST that keeps them; an object store's
    /// would cost a request per name).
    modes: bool,
    /// Compare owners (the writer gave them).
    owners: bool,
    /// The attributes to compare (those the pair keeps that this run can read: no
    /// `trusted.*` unless run as root).
    kept: Kept,
}

impl AttrCheck {
    /// What to compare in a mirror kept as `facts` say.
    fn of(facts: MirrorFacts, modes: bool) -> AttrCheck {
        AttrCheck {
            modes,
            owners: facts.owners,
            kept: Kept {
                every_namespace: facts.kept.every_namespace && crate::platform::is_root(),
                ..facts.kept
            },
        }
    }

    /// How the owner and attributes of `name` in DST differ from `record`'s, in words;
    /// `None` if they agree, or DST cannot say (a store that keeps none, a name gone
    /// meanwhile: the content check speaks for those).
    fn differ(&self, store: &dyn Reader, name: &Path, record: &Record) -> Option<String> {
        let mut why = Vec::new();
        let stat = (self.modes || self.owners)
            .then(|| store.stat(name).ok().flatten())
            .flatten();
        if self.modes
            && record.kind != Kind::Symlink
            && let Some(stat) = stat
            && stat.mode & 0o7777 != record.meta.mode & 0o7777
        {
            why.push(format!(
                "mode is {:o}, the index recorded {:o}",
                stat.mode & 0o7777,
                record.meta.mode & 0o7777
            ));
        }
        if self.owners
            && let Some(want) = record.attrs.owner
            && let Some(got) = stat.and_then(|s| s.owner)
            && got != want
        {
            why.push(format!(
                "owner is {}:{}, the index recorded {}:{}",
                got.uid, got.gid, want.uid, want.gid
            ));
        }
        if self.kept.any()
            && record.kind != Kind::Symlink
            && let Ok(got) = store.xattrs(name, &self.kept)
        {
            let differing = record.attrs.xattrs().differing(&got, &self.kept);
            if !differing.is_empty() {
                let names: Vec<String> = differing
                    .into_iter()
                    .map(|n| esc(Path::new(n)).to_string())
                    .collect();
                why.push(format!(
                    "extended attributes differ from what was mirrored: {}",
                    names.join(", ")
                ));
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// Looks at `name` in the mirror and checks it against `record`, reading a file's
/// content; the verdict, and the digest and byte count when a whole file was read.
fn look_and_read(
    store: &dyn Reader,
    record: &Record,
    name: &Path,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> (Verdict, Option<(Digest, u64)>) {
    let verdict = match (record.kind, store.look(name)) {
        // Gone, or a folder on the way is gone or no folder now (its own record says
        // what stands there).
        (_, Ok(None)) => Verdict::Bad(Problem::Missing),
        (_, Err(e)) if crate::read::is_connection_lost(&e) => lost(&e),
        (_, Err(e)) => Verdict::Bad(problem_of(&e)),
        (Kind::File, Ok(Some(Found::File(file)))) => return check_content(file, record, buf, stop),
        (Kind::Dir, Ok(Some(Found::Dir))) => Verdict::Intact,
        (Kind::Symlink, Ok(Some(Found::Symlink(target)))) => match record.target.as_deref() {
            Some(want) if want == target => Verdict::Intact,
            want => Verdict::Bad(Problem::Damaged(format!(
                "points to {}, the index recorded {}",
                esc(&target),
                esc(want.unwrap_or(Path::new("")))
            ))),
        },
        (want, Ok(Some(found))) => Verdict::Bad(Problem::Damaged(stands_in_place(&found, want))),
    };
    (verdict, None)
}

/// Reads and hashes a mirror file; the verdict, and the digest and byte count when the
/// whole content could be read.
fn check_content(
    file: Box<dyn ReadFile>,
    record: &Record,
    buf: &mut [u8],
    stop: &AtomicBool,
) -> (Verdict, Option<(Digest, u64)>) {
    let result = match record.stored {
        Stored::Plain => hash::hash_reader_until(file, buf, stop),
        Stored::Gzip => {
            // An empty file decodes to nothing without an error, which would pass for an
            // empty source file: a gzip stream is never empty.
            if file.stat().is_ok_and(|s| s.size == 0) {
                let why = "empty, where a gzip stream was stored".to_string();
                return (Verdict::Bad(Problem::Damaged(why)), None);
            }
            hash::hash_reader_until(flate2::read::MultiGzDecoder::new(file), buf, stop)
        }
    };
    match result {
        Err(_) if stop.load(Ordering::Relaxed) => (Verdict::Stopped, None),
        Err(e) if crate::read::is_connection_lost(&e) => (lost(&e), None),
        Err(e) => (
            Verdict::Bad(Problem::Damaged(read_error(&e, record.stored))),
            None,
        ),
        Ok((digest, n)) => (content_verdict(record, digest, n), Some((digest, n))),
    }
}

/// The verdict for a read that found the mirror's host gone.
fn lost(e: &io::Error) -> Verdict {
    Verdict::Lost {
        why: io_message(e),
        again: !crate::read::is_unreachable(e),
    }
}

/// Why a mirror file that failed to read counts as damaged.
fn read_error(e: &io::Error, stored: Stored) -> String {
    if stored == Stored::Gzip && crate::read::restore::is_damaged(e) {
        format!("gzip data is corrupt: {}", io_message(e))
    } else {
        format!("cannot be read: {}", io_message(e))
    }
}

/// How content of `n` bytes hashing to `digest` compares with the record.
fn content_verdict(record: &Record, digest: Digest, n: u64) -> Verdict {
    match record.sha256 {
        None => Verdict::Unchecked,
        Some(want) if want == digest => Verdict::Intact,
        Some(_) if n != record.meta.size => Verdict::Bad(Problem::Damaged(format!(
            "holds {}, the index recorded {}",
            crate::output::names::count_of(n, "byte"),
            record.meta.size
        ))),
        Some(_) => Verdict::Bad(Problem::Damaged(
            "content does not match the recorded SHA-256".to_string(),
        )),
    }
}

/// What a failed look at a recorded name means: one that went in between (a file
/// removed as it was opened) is missing; anything else unreadable is damage.
fn problem_of(e: &io::Error) -> Problem {
    if e.kind() == io::ErrorKind::NotFound {
        Problem::Missing
    } else {
        Problem::Damaged(format!("cannot be read: {}", io_message(e)))
    }
}

/// Why finding `found` where the index recorded a `want` is damage.
fn stands_in_place(found: &Found, want: Kind) -> String {
    let what = |k: Kind| match k {
        Kind::File => "a file",
        Kind::Dir => "a folder",
        Kind::Symlink => "a symlink",
        Kind::Special => "a special file",
    };
    let kind = found.kind();
    let note = if kind == Kind::Symlink {
        "; not followed"
    } else {
        ""
    };
    format!("{} stands where {} should be{note}", what(kind), what(want))
}

/// Lists DST (not its state folder) through its store, never through a symlink: each
/// name and whether it is a folder. An unreadable folder is passed over: its records are
/// looked at one by one anyway.
fn list_mirror(store: &dyn Reader, stop: &AtomicBool) -> Vec<(PathBuf, bool)> {
    let mut names = Vec::new();
    let state = Path::new(STATE_DIR);
    let _ = store.walk(Path::new(""), false, &mut |found| {
        if stop.load(Ordering::Relaxed) {
            return Step::Stop;
        }
        if found.name == state {
            return Step::Prune;
        }
        names.push((found.name, found.kind == Kind::Dir));
        Step::Go
    });
    names
}

/// The listed names the index does not know, a folder once (not its content).
fn not_in_index(listing: &[(PathBuf, bool)], state: &MirrorState) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    let mut sorted: Vec<&(PathBuf, bool)> = listing.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, is_dir) in sorted {
        if state.contains_key(rel.as_os_str()) {
            continue;
        }
        let inside_reported = findings
            .last()
            .is_some_and(|f| f.dir && rel.starts_with(&f.path));
        if !inside_reported {
            findings.push(Finding::new(rel.clone(), *is_dir, Problem::NotInIndex));
        }
    }
    findings
}

/// A source walk: its entries, what could not be read, and the source it walked (open,
/// to read the files it found through the same handle).
struct Walked {
    entries: Vec<Entry>,
    unreadable: Vec<(PathBuf, String)>,
    tree: Option<source::Source>,
}

fn walk(src: &Source, stop: &AtomicBool) -> Walked {
    let mut walked = Walked {
        entries: Vec::new(),
        unreadable: Vec::new(),
        tree: None,
    };
    let tree = match source::Source::open(&src.root) {
        Ok(tree) => tree,
        Err(error) => {
            walked.unreadable.push((PathBuf::new(), io_message(&error)));
            return walked;
        }
    };
    scan::walk(&tree, Path::new(""), &src.rules, |item| {
        if stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        match item {
            Scanned::Entry(entry) => walked.entries.push(entry),
            Scanned::Error { rel, error } => walked.unreadable.push((rel, io_message(&error))),
        }
        ControlFlow::Continue(())
    });
    walked.tree = Some(tree);
    walked
}

/// What comparing the source's entries with the index finds without reading content.
#[derive(Debug, Default, PartialEq)]
struct SourceMatch {
    /// Not in the mirror, not in the source, or of another kind or link target.
    findings: Vec<Finding>,
    /// Stored name → source path, for every file whose content is to be compared.
    files: HashMap<OsString, PathBuf>,
}

/// Matches the source's `entries` (in walk order) with the records in `state` by the
/// source path each record stands for. A folder missing on one side is reported once.
/// Records under a source path that could not be read, or that a sync leaves out
/// (`left_out`), are not "not in source".
fn compare_source(
    entries: &[Entry],
    unreadable: &[PathBuf],
    state: &MirrorState,
    left_out: impl Fn(&Path) -> bool,
) -> SourceMatch {
    // Source path → (stored name, record). Should both `a` and `a.gz` be recorded (a
    // conversion cut short), the plain one stands for the path.
    let mut by_source: HashMap<PathBuf, (&OsString, &Record)> = HashMap::new();
    for (name, record) in state {
        let logical = logical_name(Path::new(name), record);
        let keep_old = by_source
            .get(&logical)
            .is_some_and(|(_, old)| old.stored == Stored::Plain);
        if !keep_old {
            by_source.insert(logical, (name, record));
        }
    }
    let mut out = SourceMatch::default();
    let mut seen: HashSet<&Path> = HashSet::new();
    let mut new_dir: Option<&Path> = None;
    for entry in entries {
        let rel = entry.rel.as_path();
        if rel.as_os_str().is_empty() || entry.kind == Kind::Special {
            continue;
        }
        seen.insert(rel);
        if new_dir.is_some_and(|d| rel.starts_with(d)) {
            continue;
        }
        let Some((name, record)) = by_source.get(rel) else {
            let dir = entry.kind == Kind::Dir;
            if dir {
                new_dir = Some(rel);
            }
            out.findings
                .push(Finding::new(rel, dir, Problem::NotInMirror));
            continue;
        };
        let same = match (entry.kind, record.kind) {
            (Kind::File, Kind::File) => {
                out.files.insert((*name).clone(), rel.to_path_buf());
                true
            }
            (Kind::Dir, Kind::Dir) => true,
            (Kind::Symlink, Kind::Symlink) => entry.target == record.target,
            _ => false,
        };
        if !same {
            let dir = entry.kind == Kind::Dir;
            out.findings
                .push(Finding::new(rel, dir, Problem::DiffersFromSource));
        }
    }
    let mut gone: Vec<(&PathBuf, bool)> = by_source
        .iter()
        .filter(|(logical, _)| !logical.as_os_str().is_empty())
        .filter(|(logical, _)| !seen.contains(logical.as_path()))
        .filter(|(logical, _)| !unreadable.iter().any(|u| logical.starts_with(u)))
        .filter(|(logical, _)| !left_out(logical))
        .map(|(logical, (_, record))| (logical, record.kind == Kind::Dir))
        .collect();
    gone.sort();
    let mut gone_dir: Option<&Path> = None;
    for (logical, dir) in gone {
        if gone_dir.is_some_and(|d| logical.starts_with(d)) {
            continue;
        }
        if dir {
            gone_dir = Some(logical);
        }
        out.findings
            .push(Finding::new(logical, dir, Problem::NotInSource));
    }
    out
}

// ---------------------------------------------------------------------------------------
// A second look while a writer works
// ---------------------------------------------------------------------------------------

/// Size and mtime of the index and its WAL: changes whenever a writer commits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint(Vec<Option<(u64, Option<SystemTime>)>>);

impl Fingerprint {
    fn of(state_dir: &Path) -> Fingerprint {
        let file = |suffix: &str| {
            std::fs::symlink_metadata(
                state_dir.join(format!("{}{suffix}", crate::store::layout::INDEX_FILE)),
            )
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
        };
        Fingerprint(vec![file(""), file("-wal")])
    }
}

/// Looks a record up again when the index changed since it was read, so a problem that
/// is only a writer's change in flight (a file replaced after the index was read, a new
/// file not yet committed) is not reported.
struct SecondLook<'a> {
    state_dir: &'a Path,
    /// The index as it was read.
    seen: Fingerprint,
    /// An index opened later, and how it looked then.
    fresh: Option<(Fingerprint, Index)>,
}

impl<'a> SecondLook<'a> {
    fn new(state_dir: &'a Path, seen: Fingerprint) -> SecondLook<'a> {
        SecondLook {
            state_dir,
            seen,
            fresh: None,
        }
    }

    /// `None` if the index is unchanged (or cannot be read again); otherwise the record
    /// it holds for `name` now.
    fn current(&mut self, name: &Path) -> Option<Option<Record>> {
        let now = Fingerprint::of(self.state_dir);
        if now == self.seen {
            return None;
        }
        if self.fresh.as_ref().is_none_or(|(then, _)| *then != now) {
            // Opened untouched like the first read: nothing is written here either.
            self.fresh = Index::open_untouched(self.state_dir)
                .ok()
                .flatten()
                .map(|index| (now, index));
        }
        let (_, index) = self.fresh.as_ref()?;
        index.get(name).ok()
    }

    /// A problem found, re-checked against the record the index holds now: dropped if
    /// the record is gone, checked again if it changed.
    fn settle(
        &mut self,
        checked: Checked,
        store: &dyn Reader,
        attrs: &AttrCheck,
        buf: &mut Vec<u8>,
        stop: &AtomicBool,
    ) -> Checked {
        let problem = matches!(checked.mirror, Verdict::Bad(_) | Verdict::Attrs(_))
            || matches!(checked.source, Some(SourceVerdict::Differs));
        if !problem {
            return checked;
        }
        match self.current(&checked.job.name) {
            Some(None) => {
                log::debug!("{} left the index during the check", esc(&checked.job.name));
                Checked {
                    mirror: Verdict::Stopped,
                    source: None,
                    ..checked
                }
            }
            Some(Some(record)) if record != checked.job.record => {
                let job = Job {
                    record,
                    ..checked.job
                };
                check(store, None, attrs, job, buf, stop)
            }
            _ => checked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Meta;
    use filetime::FileTime;

    fn meta(size: u64) -> Meta {
        Meta {
            size,
            mtime: FileTime::from_unix_time(1_700_000_000, 0),
            mode: 0o644,
        }
    }

    fn rec(kind: Kind, stored: Stored, sha: Option<Digest>) -> Record {
        Record {
            kind,
            meta: meta(3),
            sha256: sha,
            stored,
            target: (kind == Kind::Symlink).then(|| PathBuf::from("t")),
            disk: None,
            attrs: Default::default(),
            link: None,
        }
    }

    fn entry(rel: &str, kind: Kind) -> Entry {
        Entry {
            rel: PathBuf::from(rel),
            kind,
            meta: meta(3),
            target: (kind == Kind::Symlink).then(|| PathBuf::from("t")),
            attrs: Default::default(),
            link: None,
        }
    }

    fn state(records: &[(&str, Record)]) -> MirrorState {
        records
            .iter()
            .map(|(n, r)| (OsString::from(n), r.clone()))
            .collect()
    }

    fn lines(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn findings_read_as_one_line_each_with_names_escaped() {
        let table = [
            (
                Finding::new(
                    "docs/r.txt.gz",
                    false,
                    Problem::Damaged("content does not match the recorded SHA-256".into()),
                ),
                "damaged: docs/r.txt.gz (content does not match the recorded SHA-256)",
            ),
            (
                Finding::new("a\nb", false, Problem::Missing),
                "missing: a\\nb",
            ),
            (Finding::new("d", true, Problem::Missing), "missing: d/"),
            (
                Finding::new("x", false, Problem::NotInIndex),
                "not in index: x",
            ),
            (
                Finding::new("x", false, Problem::DiffersFromSource),
                "differs from source: x",
            ),
            (
                Finding::new("x", false, Problem::NotInMirror),
                "not in mirror: x",
            ),
            (
                Finding::new("x", true, Problem::NotInSource),
                "not in source: x/",
            ),
        ];
        for (finding, want) in table {
            assert_eq!(finding.to_string(), want);
        }
    }

    #[test]
    fn a_listing_vouches_only_for_a_recorded_stamp_and_size() {
        let listed = |kind, size, stamp| Inventoried {
            name: PathBuf::from("n"),
            kind,
            size,
            stamp,
        };
        let stamped = |kind, sha| Record {
            disk: Some(crate::model::OnDisk { size: 3, ino: 42 }),
            ..rec(kind, Stored::Plain, sha)
        };
        let sha = Some(hash::hash_reader(&b"abc"[..]).unwrap());
        let file = stamped(Kind::File, sha);
        assert_eq!(
            by_listing(&file, None),
            Some(Verdict::Bad(Problem::Missing))
        );
        let same = listed(Kind::File, 3, 42);
        assert_eq!(by_listing(&file, Some(&same)), Some(Verdict::Intact));
        let link = stamped(Kind::Symlink, None);
        assert_eq!(by_listing(&link, Some(&same)), Some(Verdict::Intact));
        // Read instead: another stamp or size, no stamp recorded, no hash recorded, a
        // folder where a file was.
        assert_eq!(by_listing(&file, Some(&listed(Kind::File, 3, 43))), None);
        assert_eq!(by_listing(&file, Some(&listed(Kind::File, 4, 42))), None);
        assert_eq!(
            by_listing(&rec(Kind::File, Stored::Plain, sha), Some(&same)),
            None
        );
        assert_eq!(by_listing(&stamped(Kind::File, None), Some(&same)), None);
        assert_eq!(by_listing(&file, Some(&listed(Kind::Dir, 0, 0))), None);
        let zero = Record {
            disk: Some(crate::model::OnDisk { size: 3, ino: 0 }),
            ..file.clone()
        };
        assert_eq!(by_listing(&zero, Some(&listed(Kind::File, 3, 0))), None);
        let dir = rec(Kind::Dir, Stored::Plain, None);
        assert_eq!(
            by_listing(&dir, Some(&listed(Kind::Dir, 0, 0))),
            Some(Verdict::Intact)
        );
        assert_eq!(by_listing(&dir, Some(&same)), None);
    }

    #[test]
    fn content_verdicts() {
        let d = hash::hash_reader(&b"abc"[..]).unwrap();
        let other = Digest([0; 32]);
        let r = |sha| rec(Kind::File, Stored::Gzip, sha);
        assert_eq!(content_verdict(&r(Some(d)), d, 3), Verdict::Intact);
        assert_eq!(content_verdict(&r(None), d, 3), Verdict::Unchecked);
        assert_eq!(
            content_verdict(&r(Some(other)), d, 3),
            Verdict::Bad(Problem::Damaged(
                "content does not match the recorded SHA-256".into()
            ))
        );
        assert_eq!(
            content_verdict(&r(Some(other)), d, 5),
            Verdict::Bad(Problem::Damaged(
                "holds 5 bytes, the index recorded 3".into()
            ))
        );
    }

    #[test]
    fn a_name_gone_meanwhile_is_missing_other_errors_are_damage() {
        assert_eq!(
            problem_of(&io::Error::from(io::ErrorKind::NotFound)),
            Problem::Missing
        );
        assert!(matches!(
            problem_of(&io::Error::from(io::ErrorKind::PermissionDenied)),
            Problem::Damaged(why) if why.starts_with("cannot be read: ")
        ));
        assert_eq!(
            stands_in_place(&Found::Symlink("x".into()), Kind::File),
            "a symlink stands where a file should be; not followed"
        );
        assert_eq!(
            stands_in_place(&Found::Dir, Kind::Symlink),
            "a folder stands where a symlink should be"
        );
    }

    #[test]
    fn gzip_errors_are_called_corrupt() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "corrupt deflate stream");
        assert_eq!(
            read_error(&e, Stored::Gzip),
            "gzip data is corrupt: corrupt deflate stream"
        );
        assert!(read_error(&e, Stored::Plain).starts_with("cannot be read"));
    }

    #[test]
    fn unknown_names_are_listed_and_a_folder_once() {
        let st = state(&[
            ("", rec(Kind::Dir, Stored::Plain, None)),
            ("a.gz", rec(Kind::File, Stored::Gzip, None)),
        ]);
        let listing: Vec<(PathBuf, bool)> = [
            ("a.gz", false),
            ("extra", true),
            ("extra/x", false),
            ("extra/y/z", false),
            ("stray.txt", false),
        ]
        .iter()
        .map(|(n, d)| (PathBuf::from(n), *d))
        .collect();
        assert_eq!(
            lines(&not_in_index(&listing, &st)),
            ["not in index: extra/", "not in index: stray.txt"]
        );
    }

    #[test]
    fn source_comparison_by_source_path() {
        let st = state(&[
            ("", rec(Kind::Dir, Stored::Plain, None)),
            ("a.txt.gz", rec(Kind::File, Stored::Gzip, None)),
            ("b", rec(Kind::File, Stored::Plain, None)),
            ("link", rec(Kind::Symlink, Stored::Plain, None)),
            ("kind", rec(Kind::File, Stored::Plain, None)),
            ("gone", rec(Kind::Dir, Stored::Plain, None)),
            ("gone/x", rec(Kind::File, Stored::Plain, None)),
            ("excluded.tmp", rec(Kind::File, Stored::Plain, None)),
            ("locked/y", rec(Kind::File, Stored::Plain, None)),
        ]);
        let mut moved = entry("link", Kind::Symlink);
        moved.target = Some(PathBuf::from("elsewhere"));
        let entries = [
            entry("", Kind::Dir),
            entry("a.txt", Kind::File),
            entry("b", Kind::File),
            moved,
            entry("kind", Kind::Dir),
            entry("new", Kind::Dir),
            entry("new/n", Kind::File),
            entry("new.txt", Kind::File),
            entry("fifo", Kind::Special),
        ];
        let unreadable = [PathBuf::from("locked")];
        let m = compare_source(&entries, &unreadable, &st, |p| {
            p.extension().is_some_and(|e| e == "tmp")
        });
        assert_eq!(
            lines(&m.findings),
            [
                "differs from source: link",
                "differs from source: kind/",
                "not in mirror: new/",
                "not in mirror: new.txt",
                "not in source: gone/",
            ]
        );
        let mut files: Vec<_> = m.files.into_iter().collect();
        files.sort();
        assert_eq!(
            files,
            [
                (OsString::from("a.txt.gz"), PathBuf::from("a.txt")),
                (OsString::from("b"), PathBuf::from("b")),
            ]
        );
    }

    #[test]
    fn the_progress_line_counts_what_the_summary_counts() {
        let counts = Counts {
            files_verified: 3,
            missing: 1,
            bytes_checked: 2048,
            ..Counts::default()
        };
        let [first, _] = summary_lines(&counts, false, "completed", "now", 0.0);
        assert!(first.ends_with("Files verified: 3"), "{first}");
        assert_eq!(
            progress_line(&counts, 4),
            "3/4 files verified, 2.0 KiB read"
        );
    }

    #[test]
    fn outcomes_and_summary_lines() {
        let mut c = Counts {
            files_verified: 4,
            not_in_index: 1,
            bytes_checked: 2048,
            ..Counts::default()
        };
        assert_eq!(outcome(&c, false, false, false), Outcome::Clean);
        assert_eq!(outcome(&c, true, false, false), Outcome::Problems);
        assert_eq!(outcome(&c, false, false, true), Outcome::Unusable);
        assert_eq!(outcome(&c, false, true, true), Outcome::Interrupted);
        c.missing = 1;
        assert_eq!(outcome(&c, false, false, false), Outcome::Problems);
        let [first, second] = summary_lines(&c, false, "completed", "2026-01-02 03:04:05", 1.234);
        assert_eq!(
            first,
            "Verify completed at 2026-01-02 03:04:05, Duration: 1.23 seconds, Files verified: 4"
        );
        assert_eq!(
            second,
            "Damaged: 0, Missing: 1, Unchecked: 0, Not in index: 1, Bytes checked: 2048 (2.0 KiB)"
        );
        let [_, with_source] = summary_lines(&c, true, "completed", "now", 0.0);
        assert!(
            with_source.contains(
                "Not in index: 1, Differs from source: 0, Not in mirror: 0, Not in source: 0, Unreadable in source: 0, Bytes"
            ),
            "{with_source}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn an_empty_or_truncated_gzip_file_is_damaged() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let d = hash::hash_reader(&b""[..]).unwrap();
        let record = Record {
            meta: meta(0),
            ..rec(Kind::File, Stored::Gzip, Some(d))
        };
        let stop = AtomicBool::new(false);
        let mut buf = vec![0u8; 64];
        let empty = dir.path().join("e.gz");
        std::fs::write(&empty, b"").unwrap();
        let (v, _) = check_content(
            Box::new(std::fs::File::open(&empty).unwrap()),
            &record,
            &mut buf,
            &stop,
        );
        assert!(matches!(v, Verdict::Bad(Problem::Damaged(_))), "{v:?}");

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello world").unwrap();
        let bytes = gz.finish().unwrap();
        let cut = dir.path().join("c.gz");
        std::fs::write(&cut, &bytes[..bytes.len() - 6]).unwrap();
        let (v, _) = check_content(
            Box::new(std::fs::File::open(&cut).unwrap()),
            &record,
            &mut buf,
            &stop,
        );
        assert!(
            matches!(&v, Verdict::Bad(Problem::Damaged(why)) if why.starts_with("gzip data is corrupt")),
            "{v:?}"
        );
    }
}

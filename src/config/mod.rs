//! The command line and the config file (`file`) turned into immutable [`Settings`]: one
//! [`Config`] per pair, validated before anything runs (precedence: flags given on the
//! command line, then the file's pair, then the file's top level, then defaults). For a
//! pair on the command line SRC must be a directory; SRC and DST must never be the same
//! directory in any spelling, nor SRC inside DST; DST inside SRC is left out of the scan.
//! Every error here is a usage error (exit 2) and touches nothing.
//!
//! The command line reaches this module as plain [`Overrides`] (the `cli` side converts
//! its clap types), so config knows nothing of clap; the value types both clap and serde
//! parse (durations, retention, sizes) live in [`value`].

pub mod dest;
pub(crate) mod file;
pub mod filter;
pub mod value;

pub use dest::{Bucket, Dest, Remote, S3Settings};
pub use file::{default_path, state_dir};
pub use value::{Retention, Size, TimeSpan};

use crate::config::filter::Excludes;
use crate::engine::plan::{Guard, PlanOptions};
use crate::output::names::{esc, io_message};
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
    /// DST relative to SRC when DST lies inside SRC: left out of the scan.
    pub dst_in_src: Option<PathBuf>,
    /// The mirror: a local folder resolved (symlinks and `..`) even before it exists, or
    /// a remote one by its URL. Where DST is written, and what pairs are compared by.
    pub dst: Dest,
}

impl Pair {
    /// The local mirror folder, if DST is on this machine.
    pub fn dst_local(&self) -> Option<&Path> {
        self.dst.local()
    }
}

/// Everything one pair needs, settled.
#[derive(Clone, Debug)]
pub struct Config {
    /// What to mirror where.
    pub pair: Pair,
    /// Compress, checksum, delete.
    pub plan: PlanOptions,
    /// How long replaced and deleted files are kept.
    pub versions: Retention,
    /// The most bytes all versions may take (oldest pruned first after a full pass);
    /// `None` for no limit.
    pub versions_max_size: Option<u64>,
    /// When a pass holds its deletions back.
    pub guard: Guard,
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

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            debounce: Duration::from_millis(500),
            rescan: Some(Duration::from_secs(600)),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// One pair of a run: its name (for logs), whether it runs, and its settings.
#[derive(Clone, Debug)]
pub struct PairSettings {
    /// How logs name the pair (`name` in the file, else the source folder's name).
    pub name: String,
    /// False: skipped, and said so.
    pub enabled: bool,
    /// The pair's settled configuration.
    pub config: Config,
}

/// Everything a `sync` or `watch` run needs: one pair from the command line, or every
/// pair of a config file with the command line's flags on top.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The pairs, in file order.
    pub pairs: Vec<PairSettings>,
    /// Watch timing.
    pub timing: Timing,
    /// Output settings (shared by all pairs).
    pub output: Output,
    /// The config file these came from, if any (watched for edits).
    pub file: Option<PathBuf>,
}

impl Settings {
    /// Settles the pairs of the config file at `path` for a command that only reads
    /// mirrors (`verify`): the file's pairs, jobs and log files, with `jobs`,
    /// `ssh_command` and `output` from the command line on top.
    pub fn from_file_for_reading(
        path: &Path,
        jobs: Option<u32>,
        ssh_command: Option<&str>,
        output: &OutputOverrides,
    ) -> Result<Settings, ConfigError> {
        let overrides = Overrides {
            mirror: MirrorOverrides {
                jobs,
                ssh_command: ssh_command.map(str::to_string),
                ..MirrorOverrides::default()
            },
            output: output.clone(),
            timing: None,
        };
        file::load(path, &overrides)
    }

    /// Settles a `sync` or `watch` run: SRC DST from the command line, or the config
    /// file at `config` (or the default one when neither is given), with `cli` on top.
    pub fn settle(
        src: Option<&Path>,
        dst: Option<&Path>,
        config: Option<&Path>,
        cli: &Overrides,
    ) -> Result<Settings, ConfigError> {
        match (src, dst, config) {
            (Some(src), Some(dst), _) => {
                let output = output(&cli.output, None);
                let dst = Dest::parse(dst.as_os_str())
                    .map_err(|e| ConfigError(e.to_string()))?
                    .with_ssh_command(cli.mirror.ssh_command.as_deref(), None)
                    .with_s3(&S3Settings {
                        endpoint: cli.mirror.s3_endpoint.clone(),
                        ..S3Settings::default()
                    });
                let pair = Pair::resolve(src, &dst)?;
                let plan = plan_options(&cli.mirror, &file::PairDefaults::default());
                let config = Config {
                    pair,
                    plan,
                    versions: retention(&cli.mirror, &file::PairDefaults::default()),
                    versions_max_size: versions_max_size(
                        &cli.mirror,
                        &file::PairDefaults::default(),
                    ),
                    guard: guard(&cli.mirror, &file::PairDefaults::default()),
                    excludes: excludes(&cli.mirror.exclude, &[])?,
                    jobs: mirror_jobs(&dst, plan.compress, cli.mirror.jobs, None),
                    output: output.clone(),
                };
                let name = display_name(&config.pair.src);
                Ok(Settings {
                    pairs: vec![PairSettings {
                        name,
                        enabled: true,
                        config,
                    }],
                    timing: timing(cli.timing.as_ref(), &Timing::default())?,
                    output,
                    file: None,
                })
            }
            (None, None, Some(path)) => file::load(path, cli),
            (None, None, None) => match file::default_path() {
                Some(path) if path.exists() => file::load(&path, cli),
                Some(path) => Err(ConfigError(format!(
                    "give SRC and DST, or a config file with --config (there is none at {})",
                    esc(&path)
                ))),
                None => Err(ConfigError(
                    "give SRC and DST, or a config file with --config".to_string(),
                )),
            },
            _ => Err(ConfigError("give both SRC and DST".to_string())),
        }
    }

    /// The pairs that run.
    pub fn enabled(&self) -> impl Iterator<Item = &PairSettings> {
        self.pairs.iter().filter(|p| p.enabled)
    }
}

/// The command line's layer over a config file: flags given win (flag > file pair >
/// file top level > default). Every field is "not given" by default; the `cli` side
/// fills it from its clap types.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// What the mirror holds and how it compares.
    pub mirror: MirrorOverrides,
    /// What the run prints and logs.
    pub output: OutputOverrides,
    /// When a watcher acts; `None` for a command without timing flags (`sync`).
    pub timing: Option<TimingOverrides>,
}

/// The mirror options given on the command line (`--compress`, `--exclude`, …).
#[derive(Clone, Debug, Default)]
pub struct MirrorOverrides {
    /// `--compress`: on, whatever the file says.
    pub compress: bool,
    /// `--checksum`: on, whatever the file says.
    pub checksum: bool,
    /// `--no-delete`: deletions off, whatever the file says.
    pub no_delete: bool,
    /// `--xattrs`: on, whatever the file says.
    pub xattrs: bool,
    /// `--acls`: on, whatever the file says.
    pub acls: bool,
    /// `--hard-links` (`Some(true)`) or `--no-hard-links` (`Some(false)`).
    pub hard_links: Option<bool>,
    /// `--exclude`, added to the file's.
    pub exclude: Vec<String>,
    /// `--keep-versions`.
    pub keep_versions: Option<Retention>,
    /// `--versions-max-size`.
    pub versions_max_size: Option<Size>,
    /// `--force`: the deletion guard lets everything through.
    pub force: bool,
    /// `--max-delete`.
    pub max_delete: Option<u64>,
    /// `--jobs`.
    pub jobs: Option<u32>,
    /// `--ssh-command`: how a remote DST is reached, over the file's `ssh_command`.
    pub ssh_command: Option<String>,
    /// `--s3-endpoint`: where an `s3://` DST's service is, over the file's `endpoint`.
    pub s3_endpoint: Option<String>,
}

/// The output options given on the command line.
#[derive(Clone, Debug, Default)]
pub struct OutputOverrides {
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--json`.
    pub json: bool,
    /// `--log-file`, over the file's `log_file`.
    pub log_file: Option<PathBuf>,
    /// `--error-log`, over the file's `error_log_file`.
    pub error_log: Option<PathBuf>,
    /// How many `-v`.
    pub verbose: u8,
    /// `-q`.
    pub quiet: bool,
}

/// The timing options given on the command line (`watch`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TimingOverrides {
    /// `--debounce`.
    pub debounce: Option<TimeSpan>,
    /// `--rescan` (0: never).
    pub rescan: Option<TimeSpan>,
    /// `--max-wait`.
    pub max_wait: Option<TimeSpan>,
}

/// The name logs use for a pair whose file gives none: the source folder's name.
fn display_name(src: &Path) -> String {
    src.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| src.display().to_string())
}

fn timing(t: Option<&TimingOverrides>, base: &Timing) -> Result<Timing, ConfigError> {
    let debounce = t
        .and_then(|t| t.debounce)
        .map_or(base.debounce, TimeSpan::duration);
    if debounce.is_zero() {
        return Err(ConfigError(
            "the debounce time must be more than 0; try 50ms".to_string(),
        ));
    }
    let rescan = match t.and_then(|t| t.rescan).map(TimeSpan::duration) {
        Some(every) => (!every.is_zero()).then_some(every),
        None => base.rescan,
    };
    let max_wait = t
        .and_then(|t| t.max_wait)
        .map_or(base.max_wait, TimeSpan::duration);
    if max_wait.is_zero() {
        // 0 would copy a busy file at every event, which is what the debounce prevents;
        // unlike --rescan 0 there is no "never" (a growing log must be copied sometime).
        return Err(ConfigError(
            "the max-wait must be more than 0: it is how long a file that never goes quiet \
             waits to be copied; give a duration like 30s or 5m (at least the debounce)"
                .to_string(),
        ));
    }
    Ok(Timing {
        debounce,
        rescan,
        max_wait: max_wait.max(debounce),
    })
}

/// Compress, checksum, delete, xattrs, ACLs and hard links: a flag given wins, then the
/// file's pair, then the file's top level, then off (delete and hard links: on). Owners
/// are kept when run as root.
fn plan_options(m: &MirrorOverrides, file: &file::PairDefaults) -> PlanOptions {
    PlanOptions {
        compress: m.compress || file.compress.unwrap_or(false),
        checksum: m.checksum || file.checksum.unwrap_or(false),
        delete: !m.no_delete && file.delete.unwrap_or(true),
        whole_second_mtimes: false,
        owners: crate::platform::is_root(),
        kept: crate::model::Kept {
            xattrs: m.xattrs || file.xattrs.unwrap_or(false),
            acls: m.acls || file.acls.unwrap_or(false),
            every_namespace: crate::platform::is_root(),
        },
        hard_links: m.hard_links.or(file.hard_links).unwrap_or(true),
    }
}

/// Version retention: the flag, then the file's pair, then its top level, then
/// staggered.
fn retention(m: &MirrorOverrides, file: &file::PairDefaults) -> Retention {
    m.keep_versions
        .or(file.keep_versions)
        .unwrap_or(Retention::Staggered)
}

/// The versions' size budget: the flag, then the file's pair, then its top level.
fn versions_max_size(m: &MirrorOverrides, file: &file::PairDefaults) -> Option<u64> {
    m.versions_max_size
        .or(file.versions_max_size)
        .map(Size::bytes)
}

/// The deletion guard: `--force` or `force = true`; `--max-delete` over `max_delete`.
fn guard(m: &MirrorOverrides, file: &file::PairDefaults) -> Guard {
    Guard {
        force: m.force || file.force.unwrap_or(false),
        max_delete: m.max_delete.or(file.max_delete),
    }
}

/// The file's excludes plus the command line's.
fn excludes(cli: &[String], file: &[String]) -> Result<Excludes, ConfigError> {
    let all: Vec<&str> = file.iter().chain(cli).map(String::as_str).collect();
    Excludes::new(&all).map_err(|e| ConfigError(e.to_string()))
}

fn jobs(cli: Option<u32>, file: Option<u32>) -> usize {
    match cli.or(file) {
        Some(n) => n.max(1) as usize,
        None => std::thread::available_parallelism().map_or(2, usize::from),
    }
}

/// Workers for a pair: as [`jobs`], but a remote DST gets more by default, since each
/// worker spends most of its time waiting for the server's answers (the requests of all
/// workers share one pipelined connection). `verify DST` uses it too.
pub fn jobs_for(dst: &Dest, cli: Option<u32>, file: Option<u32>) -> usize {
    match (dst, cli.or(file)) {
        (Dest::Sftp(_) | Dest::S3(_), None) => REMOTE_JOBS,
        _ => jobs(cli, file),
    }
}

/// Default workers for a remote DST.
const REMOTE_JOBS: usize = 16;

/// Workers for a pair's `sync` and `watch`: as [`jobs_for`], but gzipping into a local
/// DST gets [`COMPRESS_JOBS_PER_CORE`] workers a core by default. Each file is read,
/// deflated, then created, written and renamed into DST; with one worker a core, a
/// core sits idle (or spins on a folder's lock) whenever its worker is in the
/// filesystem, while deflating would keep it busy. More workers than cores let the
/// deflating of some overlap the I/O of the others (issue 15). A plain copy is mostly
/// the filesystem's work and gains nothing from it; a remote DST has its own default.
pub fn mirror_jobs(dst: &Dest, compress: bool, cli: Option<u32>, file: Option<u32>) -> usize {
    match (dst, cli.or(file)) {
        (Dest::Local(_), None) if compress => jobs(None, None) * COMPRESS_JOBS_PER_CORE,
        _ => jobs_for(dst, cli, file),
    }
}

/// Default workers a core for `--compress` into a local DST (see [`mirror_jobs`]).
const COMPRESS_JOBS_PER_CORE: usize = 2;

/// Output settings: flags, then the file's log paths.
fn output(o: &OutputOverrides, file_logs: Option<(Option<PathBuf>, Option<PathBuf>)>) -> Output {
    let (file_log, file_errors) = file_logs.unwrap_or_default();
    Output {
        dry_run: o.dry_run,
        json: o.json,
        log_file: o.log_file.clone().or(file_log),
        error_log: o.error_log.clone().or(file_errors),
        verbosity: match (o.quiet, o.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Verbose,
            (false, _) => Verbosity::Trace,
        },
    }
}

impl Pair {
    /// Checks SRC (it must be a folder now) and DST, and works out how they relate.
    pub fn resolve(src: &Path, dst: &Dest) -> Result<Pair, ConfigError> {
        check_source(src).map_err(|e| match Dest::parse(src.as_os_str()) {
            Ok(Dest::Sftp(_)) => ConfigError(format!(
                "source {} is on another machine; datasafe mirrors a folder on this machine \
                 (run it on that machine, or mount the folder here)",
                esc(src)
            )),
            _ => ConfigError(e.to_string()),
        })?;
        Pair::locate(src, dst)
    }

    /// Works out how SRC and DST relate without requiring SRC to exist yet (a pair in a
    /// config file whose drive is not mounted is an error of that pair at run time).
    pub fn locate(src: &Path, dst: &Dest) -> Result<Pair, ConfigError> {
        let src_canon = canonical_even_if_missing(src).map_err(|e| {
            ConfigError(format!(
                "source {} cannot be resolved: {}",
                esc(src),
                io_message(&e)
            ))
        })?;
        let dst = match dst {
            Dest::Local(dst) => dst,
            // Another machine: nothing to resolve here, and never inside SRC.
            Dest::Sftp(_) | Dest::S3(_) => {
                return Ok(Pair {
                    src: src_canon,
                    dst_in_src: None,
                    dst: dst.clone(),
                });
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
            dst_in_src,
            // Canonical, so a DST reached through a symlink (macOS's /var/folders, a
            // link to a backup drive) works like the folder itself; symlinks *inside*
            // DST are still never followed.
            dst: Dest::Local(dst_canon),
        })
    }
}

/// Why SRC cannot be mirrored now; each message names it and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// It is a file (or another non-folder).
    #[error("source {} is not a directory; give the folder to mirror", esc(.0))]
    NotADirectory(PathBuf),
    /// Nothing is there (a typo, or a drive not mounted).
    #[error("source {} does not exist; check the path (or mount its drive)", esc(.0))]
    Missing(PathBuf),
    /// It cannot be looked at.
    #[error("source {} cannot be read: {}", esc(.path), io_message(.source))]
    Unreadable {
        /// SRC as given.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Checks that SRC is a folder now.
pub fn check_source(src: &Path) -> Result<(), SourceError> {
    check_dir(src).map_err(|e| match e {
        NotAFolder::NotADirectory => SourceError::NotADirectory(src.to_path_buf()),
        NotAFolder::Missing(_) => SourceError::Missing(src.to_path_buf()),
        NotAFolder::Unreadable(source) => SourceError::Unreadable {
            path: src.to_path_buf(),
            source,
        },
    })
}

/// Why a path that must be an existing folder (SRC, a DST to read, an archive's source)
/// is not one. Each command words it for the role the path plays.
#[derive(Debug)]
pub enum NotAFolder {
    /// It is a file (or another non-folder).
    NotADirectory,
    /// Nothing is there (what the OS said, for a message that quotes it).
    Missing(io::Error),
    /// It cannot be looked at.
    Unreadable(io::Error),
}

/// Checks that `path` is an existing folder now (through a symlink, as the user named
/// it). The one check behind [`check_source`], `verify`'s DST, `versions`' and
/// `restore`'s mirror and `archive`'s source.
pub fn check_dir(path: &Path) -> Result<(), NotAFolder> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(NotAFolder::NotADirectory),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NotAFolder::Missing(e)),
        Err(e) => Err(NotAFolder::Unreadable(e)),
    }
}

/// The canonical form of `path`; for a path that does not exist yet, the canonical form
/// of its nearest existing ancestor with the rest appended.
pub fn canonical_even_if_missing(path: &Path) -> io::Result<PathBuf> {
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

    fn local(p: impl AsRef<Path>) -> Dest {
        Dest::Local(p.as_ref().to_path_buf())
    }

    #[test]
    fn gzipping_into_a_local_dst_gets_more_workers_than_cores_unless_told() {
        let cores = jobs(None, None);
        let here = local("/m");
        assert_eq!(mirror_jobs(&here, false, None, None), cores);
        assert_eq!(
            mirror_jobs(&here, true, None, None),
            cores * COMPRESS_JOBS_PER_CORE
        );
        // A flag or the file wins, whatever the pair does.
        assert_eq!(mirror_jobs(&here, true, Some(3), None), 3);
        assert_eq!(mirror_jobs(&here, true, None, Some(1)), 1);
        // A remote DST keeps its own default, gzipped or not.
        let remote = Dest::parse(std::ffi::OsStr::new("sftp://host/m")).unwrap();
        assert_eq!(mirror_jobs(&remote, true, None, None), REMOTE_JOBS);
    }

    #[test]
    fn same_directory_in_any_spelling_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for dst in [src.clone(), src.join("."), src.join("../src")] {
            let err = Pair::resolve(&src, &local(&dst)).unwrap_err();
            assert!(err.0.contains("same directory"), "{}", err.0);
        }
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&src, &link).unwrap();
            assert!(Pair::resolve(&src, &local(&link)).is_err());
        }
    }

    #[test]
    fn nesting_is_detected_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let pair = Pair::resolve(&src, &local(src.join("backup/mirror"))).unwrap();
        assert_eq!(pair.dst_in_src, Some(PathBuf::from("backup/mirror")));
        let err = Pair::resolve(&src, &local(dir.path())).unwrap_err();
        assert!(err.0.contains("inside destination"), "{}", err.0);
    }

    #[test]
    fn missing_or_non_directory_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Pair::resolve(&missing, &local(dir.path().join("d"))).unwrap_err();
        assert!(
            err.0.contains("does not exist") && err.0.contains("nope"),
            "{}",
            err.0
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = Pair::resolve(&file, &local(dir.path().join("d"))).unwrap_err();
        assert!(err.0.contains("not a directory"), "{}", err.0);
    }

    #[test]
    fn max_wait_must_be_more_than_0_and_at_least_the_debounce() {
        let args = |max_wait: Duration| TimingOverrides {
            debounce: Some(Duration::from_secs(2).into()),
            rescan: None,
            max_wait: Some(max_wait.into()),
        };
        let err = timing(Some(&args(Duration::ZERO)), &Timing::default()).unwrap_err();
        assert!(
            err.0.contains("max-wait") && err.0.contains("30s"),
            "{}",
            err.0
        );
        let zero_in_file = Timing {
            max_wait: Duration::ZERO,
            ..Timing::default()
        };
        assert!(timing(None, &zero_in_file).is_err());
        let t = timing(Some(&args(Duration::from_secs(1))), &Timing::default()).unwrap();
        assert_eq!(t.max_wait, Duration::from_secs(2));
    }
}

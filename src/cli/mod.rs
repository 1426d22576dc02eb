//! The command line: the clap derive types (here: no I/O and no defaults that depend on
//! the machine, those are settled in `config`), and the runners that carry a parsed
//! command out (`run` dispatches, one runner per subcommand, `exit` is the exit codes).
//! Flag names are a contract that people script against; change them only with a
//! deprecation path. The values flags share with the config file (durations, retention,
//! sizes) are `config`'s types.

mod agent;
pub mod exit;
mod overrides;
mod read;
pub mod run;
mod status;
mod sync;
mod watch;

use crate::config::{Retention, Size, TimeSpan};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Live, versioned, optionally gzipped mirrors of the directories you work in.
#[derive(Debug, Parser)]
#[command(name = "datasafe", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mirror SRC into DST once: copy what changed, delete what is gone, then exit.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(SyncArgs),
    /// Keep DST a mirror of SRC as files change, until Ctrl-C.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(WatchArgs),
    /// Re-read every file a mirror holds and check it against its index (and the source).
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Show what the running watcher is doing.
    Status(StatusArgs),
    /// Let a running watcher carry out the deletions its deletion guard holds back.
    #[command(after_help = RELEASE_EXAMPLES)]
    Release(ReleaseArgs),
    /// Rebuild files from a mirror (and its versions) as they were at a given time.
    #[command(after_help = RESTORE_EXAMPLES)]
    Restore(RestoreArgs),
    /// List the old versions a mirror keeps of replaced and deleted files.
    Versions(VersionsArgs),
    /// Write a folder, or a mirror as it was at a given time, into one zip or tar file.
    #[command(after_help = ARCHIVE_EXAMPLES)]
    Archive(ArchiveArgs),
    /// Run `watch --config` at login (systemd user unit, or macOS LaunchAgent).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// `datasafe agent …`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Write, enable and start the login agent: `datasafe watch` with SRC DST and the
    /// options given, or with the config file.
    #[command(after_help = AGENT_EXAMPLES)]
    Install {
        /// What the agent runs (as `datasafe watch` takes it).
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Stop, disable and remove the login agent.
    Uninstall,
    /// Print the unit (or plist) without installing it.
    #[command(after_help = AGENT_EXAMPLES)]
    Print {
        /// What the agent runs (as `datasafe watch` takes it).
        #[command(flatten)]
        watch: WatchArgs,
        /// Which service manager to print for [default: this system's].
        #[arg(long, value_enum)]
        platform: Option<PlatformArg>,
    },
}

/// `agent print --platform`: the service managers (`daemon::agent::Platform`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformArg {
    /// A systemd user unit (Linux).
    Systemd,
    /// A launchd LaunchAgent (macOS).
    Launchd,
}

const AGENT_EXAMPLES: &str = "\
Examples:
  datasafe agent install ~/notes /mnt/backup/notes --compress
  datasafe agent install --config ~/.config/datasafe/config.toml
  datasafe agent print --platform launchd ~/notes /mnt/backup/notes

Without SRC DST the agent watches every pair of the config file
[default: $XDG_CONFIG_HOME/datasafe/config.toml].";

/// `datasafe status [--json]`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `datasafe release [DST] | --config FILE`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The mirror whose held deletions to release (default: every running watcher's).
    pub dst: Option<PathBuf>,
    /// Release the pairs of the watcher running this config file.
    #[arg(long, value_name = "FILE", conflicts_with = "dst")]
    pub config: Option<PathBuf>,
}

const RELEASE_EXAMPLES: &str = "\
Examples:
  datasafe release /mnt/backup/notes
  datasafe release --config ~/.config/datasafe/config.toml
  kill -USR1 PID          (the same, for the watcher with that pid)

The watcher runs one full pass without the deletion guard for each pair that holds
deletions back (see `datasafe status`), and logs what it deletes; deleted files are
kept as versions. Without a running watcher, run `datasafe sync SRC DST --force`.
Exit codes: 0 a watcher was asked, 1 no running watcher mirrors DST.";

const VERIFY_EXAMPLES: &str = "\
Examples:
  datasafe verify /mnt/backup/notes
  datasafe verify --source ~/notes /mnt/backup/notes
  datasafe verify --config ~/.config/datasafe/config.toml --source
  datasafe verify --source ~/notes --repair /mnt/backup/notes
  datasafe verify backup@nas:/srv/backup/notes     (downloads every file to hash it)
  datasafe verify s3://bucket/notes                (a listing: ETags and sizes)
  datasafe verify --deep s3://bucket/notes         (downloads every object to hash it)

Exit codes: 0 the mirror is intact (with --repair: or was repaired), 1 damaged or missing
files (with --source: also any difference from the source), 2 usage error or no index.
Ctrl-C or SIGTERM stops the check, then ends the process by that signal (a shell shows
130 or 143).";

/// `datasafe verify DST [options]` or `datasafe verify --config FILE [options]`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The mirror to check: a folder, host:path or sftp://[user@]host[:port]/path.
    #[arg(value_name = "DST")]
    pub dst: Option<PathBuf>,
    /// Check every enabled pair's DST in this TOML file instead [default:
    /// $XDG_CONFIG_HOME/datasafe/config.toml when no DST is given].
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "dst")]
    pub config: Option<PathBuf>,
    /// Also compare the mirror with SRC as it is now; with --config, give it without SRC
    /// to compare each pair with its own source.
    #[arg(long, value_name = "SRC", num_args = 0..=1)]
    pub source: Option<Option<PathBuf>>,
    /// Then write again, from the source, what the check found wrong (as `sync --repair`
    /// would; what it replaces is kept as a version). Needs --source SRC with a DST; with
    /// --config each pair is compared with and repaired from its own source.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: let through deletions the guard holds back (an emptied source, a
    /// mass delete).
    #[arg(long, requires = "repair")]
    pub force: bool,
    /// With DST --source SRC: leave out what the mirror leaves out, as `sync --exclude`
    /// does (repeatable; a leading / anchors at SRC's root); --repair keeps it out too.
    #[arg(long, value_name = "GLOB", requires = "dst")]
    pub exclude: Vec<String>,
    /// Hashing threads [default: number of cores].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// Download and hash every file of an s3:// mirror, where the default trusts a
    /// listing whose ETag and size match the index (a mismatch is downloaded either
    /// way). Local and SFTP mirrors are always read in full.
    #[arg(long)]
    pub deep: bool,
    /// End stdout with one JSON object of the counts and the paths found.
    #[arg(long)]
    pub json: bool,
    /// Append every line, with a timestamp, to FILE.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Also print each file found intact.
    #[arg(long, short = 'v', action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only problems, warnings, errors and the summary; no progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The ssh program and its options for a remote DST (host:path, sftp://…), like
    /// rsync's -e: for example "ssh -p 2222 -i ~/.ssh/backup" [default:
    /// $DATASAFE_SSH_COMMAND, then the config's ssh_command, then ssh].
    #[arg(long, value_name = "CMD")]
    pub ssh_command: Option<String>,
    /// The endpoint URL of an s3:// DST's service (a self-hosted one: MinIO, Ceph,
    /// SeaweedFS, Backblaze B2…), for example http://127.0.0.1:8333 [default: the
    /// config's endpoint, then $AWS_ENDPOINT_URL, then the profile's endpoint_url,
    /// then AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

const RESTORE_EXAMPLES: &str = "\
Examples:
  datasafe restore /mnt/backup/notes ~/notes-restored
  datasafe restore --at '2026-11-24 15:30:00' /mnt/backup/notes /tmp/notes docs/report.txt
  datasafe restore sftp://backup@nas/srv/backup/notes ~/notes-restored

Without --at the live mirror is restored as it is; with it, each file as it was at that
local time (from the versions kept in DST/.datasafe/versions).
Exit codes: 0 all done, 1 some files failed, 2 bad input (nothing restored). Ctrl-C or
SIGTERM rolls back the file in flight, then ends the process by that signal (a shell
shows 130 or 143).";

/// `datasafe restore DST TARGET [--at TIME] [--force] [PATH...]`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The mirror to restore from (a sync or watch DST: a folder, host:path or
    /// sftp://…).
    #[arg(value_name = "DST")]
    pub dst: PathBuf,
    /// Where the files go (created if missing; must be empty unless --force).
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
    /// Restore the files as they were at this local time, "YYYY-MM-DD HH:MM:SS"
    /// [default: now: the live mirror, no versions].
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Restore into a TARGET that is not empty, overwriting the files restored.
    #[arg(long)]
    pub force: bool,
    /// As root, give files the user and group numbers recorded, not those their names
    /// have on this machine (as rsync's --numeric-ids).
    #[arg(long)]
    pub numeric_ids: bool,
    /// Only these paths (relative to the mirror's root; a folder means all under it).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The ssh program and its options for a remote DST (host:path, sftp://…), like
    /// rsync's -e: for example "ssh -p 2222 -i ~/.ssh/backup" [default:
    /// $DATASAFE_SSH_COMMAND, then the config's ssh_command, then ssh].
    #[arg(long, value_name = "CMD")]
    pub ssh_command: Option<String>,
    /// The endpoint URL of an s3:// DST's service (a self-hosted one: MinIO, Ceph,
    /// SeaweedFS, Backblaze B2…), for example http://127.0.0.1:8333 [default: the
    /// config's endpoint, then $AWS_ENDPOINT_URL, then the profile's endpoint_url,
    /// then AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

/// `datasafe versions DST [PATH] [--json]`.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The mirror (a sync or watch DST: a folder, host:path or sftp://…).
    #[arg(value_name = "DST")]
    pub dst: PathBuf,
    /// Only the versions of this file, or of everything under this folder (relative to
    /// the mirror's root).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Print one JSON array of {path, time, size, file} (with --summary, one object).
    #[arg(long)]
    pub json: bool,
    /// Show what the versions use instead of listing them: count, bytes on disk,
    /// oldest and newest, per top-level folder and in all.
    #[arg(long)]
    pub summary: bool,
    /// The ssh program and its options for a remote DST (host:path, sftp://…), like
    /// rsync's -e: for example "ssh -p 2222 -i ~/.ssh/backup" [default:
    /// $DATASAFE_SSH_COMMAND, then the config's ssh_command, then ssh].
    #[arg(long, value_name = "CMD")]
    pub ssh_command: Option<String>,
    /// The endpoint URL of an s3:// DST's service (a self-hosted one: MinIO, Ceph,
    /// SeaweedFS, Backblaze B2…), for example http://127.0.0.1:8333 [default: the
    /// config's endpoint, then $AWS_ENDPOINT_URL, then the profile's endpoint_url,
    /// then AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

const ARCHIVE_EXAMPLES: &str = "\
Examples:
  datasafe archive ~/notes notes.zip
  datasafe archive ~/notes ~/backups          (writes ~/backups/notes_YYYYMMDD_HHMMSS.zip)
  datasafe archive ~/backup/notes friday.tar.zst --at \"2026-11-27 17:00:00\"
  datasafe archive ~/backup/notes - --format tar.zst | ssh host 'cat > notes.tar.zst'

OUT is a file (the format from its extension: .zip, .tar, .tar.gz/.tgz, .tar.zst), a
folder (a dated NAME_YYYYMMDD_HHMMSS archive is written inside it), or - for stdout.
Exit codes: 0 all archived, 1 some files could not be read, 2 bad input, 130 interrupted.";

/// `datasafe archive SOURCE OUT [options] [PATH...]`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// A folder, or a datasafe mirror (a sync or watch DST: a folder, host:path or
    /// sftp://…).
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// The archive file, a folder to write a dated archive into, or - for stdout.
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// Archive a mirror as it was at this local time, "YYYY-MM-DD HH:MM:SS" (mirrors
    /// only) [default: now].
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// The archive format [default: from OUT's extension; zip for a folder, tar for -].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<ArchiveFormat>,
    /// Compression level: deflate and gzip 0-9 (default 6), zstd 1-22 (default 3).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
    /// Leave out paths matching GLOB (relative to SOURCE, or any single name); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Put every entry under this folder name in the archive (as `git archive` does).
    #[arg(long, value_name = "NAME/")]
    pub prefix: Option<String>,
    /// Replace an existing OUT.
    #[arg(long)]
    pub force: bool,
    /// Only warnings, errors and the summary.
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,
    /// One line per file archived.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// End stdout with one JSON object of the run's counts.
    #[arg(long)]
    pub json: bool,
    /// Only these paths (relative to SOURCE; a folder means all under it).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The ssh program and its options for a remote DST (host:path, sftp://…), like
    /// rsync's -e: for example "ssh -p 2222 -i ~/.ssh/backup" [default:
    /// $DATASAFE_SSH_COMMAND, then the config's ssh_command, then ssh].
    #[arg(long, value_name = "CMD")]
    pub ssh_command: Option<String>,
    /// The endpoint URL of an s3:// DST's service (a self-hosted one: MinIO, Ceph,
    /// SeaweedFS, Backblaze B2…), for example http://127.0.0.1:8333 [default: the
    /// config's endpoint, then $AWS_ENDPOINT_URL, then the profile's endpoint_url,
    /// then AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

/// The formats `archive` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveFormat {
    /// Zip, deflated (zip64 where needed).
    Zip,
    /// Plain tar.
    Tar,
    /// Gzipped tar.
    #[value(name = "tar.gz")]
    TarGz,
    /// Zstandard-compressed tar.
    #[value(name = "tar.zst")]
    TarZst,
}

const WATCH_EXAMPLES: &str = "\
Examples:
  datasafe watch ~/notes ~/backup/notes
  datasafe watch --compress --debounce 2s --rescan 1h ~/work /mnt/backup/work

Durations read like 50ms, 2s, 10m, 1h; --rescan 0 turns the fallback rescan off.
Exit codes: 2 usage or fatal error. Ctrl-C or SIGTERM stops cleanly (files in flight,
the index, the summary), then ends the process by that signal (a shell shows 130 or
143); a second Ctrl-C quits at once.";

/// `datasafe watch SRC DST [options]`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// What to mirror where.
    #[command(flatten)]
    pub pairs: PairArgs,
    /// What the mirror holds and how it compares.
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// When changes are mirrored.
    #[command(flatten)]
    pub timing: TimingArgs,
    /// What the run prints and logs.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// When a watcher acts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Timing")]
pub struct TimingArgs {
    /// How long a path must be quiet before it is mirrored [default: 500ms].
    #[arg(long, value_name = "DURATION")]
    pub debounce: Option<TimeSpan>,
    /// How often a full rescan catches anything events missed; 0: never [default: 10m].
    #[arg(long, value_name = "DURATION")]
    pub rescan: Option<TimeSpan>,
    /// The longest a file that never goes quiet (a growing log) waits to be copied; more
    /// than 0 [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<TimeSpan>,
}

const SYNC_EXAMPLES: &str = "\
Examples:
  datasafe sync ~/notes /mnt/backup/notes
  datasafe sync --compress --exclude '*.tmp' --exclude .cache ~/work /mnt/backup/work
  datasafe sync --dry-run ~/notes /mnt/backup/notes
  datasafe sync --repair ~/notes /mnt/backup/notes

Exit codes: 0 all done, 1 some files failed, 2 usage or fatal error (DST cannot be
written). Ctrl-C or SIGTERM finishes the files in flight, saves the index and prints the
summary, then ends the process by that signal (a shell shows 130 or 143).";

/// `datasafe sync SRC DST [options]`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// What to mirror where.
    #[command(flatten)]
    pub pairs: PairArgs,
    /// Do not trust the index about DST: read every file in DST, compare its type, size,
    /// mtime and content with what was mirrored, and write again what differs (what it
    /// replaces is kept as a version).
    #[arg(long)]
    pub repair: bool,
    /// What the mirror holds and how it compares.
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// What the run prints and logs.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// SRC and DST, or the config file that lists the pairs (for `sync` and `watch`;
/// `watch` also reloads the file when it changes).
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The directory to mirror (must exist).
    #[arg(value_name = "SRC", requires = "dst")]
    pub src: Option<PathBuf>,
    /// Where the mirror lives (created with its parents if missing).
    #[arg(value_name = "DST")]
    pub dst: Option<PathBuf>,
    /// Use every pair in this TOML file instead of SRC DST [default:
    /// $XDG_CONFIG_HOME/datasafe/config.toml when no SRC DST is given].
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "src")]
    pub config: Option<PathBuf>,
}

/// Options that shape a mirror (shared by every command that writes one).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Mirror")]
pub struct MirrorArgs {
    /// Store each file gzipped as NAME.gz.
    #[arg(long)]
    pub compress: bool,
    /// Compare files by SHA-256 of their content instead of size and mtime.
    #[arg(long)]
    pub checksum: bool,
    /// Keep files in DST that are gone from SRC.
    #[arg(long)]
    pub no_delete: bool,
    /// Mirror extended attributes (user.* as a user; every namespace as root), as
    /// rsync's -X.
    #[arg(long)]
    pub xattrs: bool,
    /// Mirror POSIX ACLs, as rsync's -A.
    #[arg(long)]
    pub acls: bool,
    /// Names of one file in SRC (hard links) are one file in DST, copied once, as
    /// rsync's -H [default: on].
    #[arg(long, overrides_with = "no_hard_links")]
    pub hard_links: bool,
    /// Copy each name of a hard-linked file on its own.
    #[arg(long, overrides_with = "hard_links")]
    pub no_hard_links: bool,
    /// Leave out paths matching GLOB (relative to SRC, or any single name; a leading `/`
    /// anchors it at SRC's root); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// How long replaced and deleted files are kept in DST/.datasafe/versions:
    /// `staggered` (all for an hour, hourly for a day, daily for 30 days), a duration
    /// such as `7d`, or `0` for no versions [default: staggered].
    #[arg(long, value_name = "RETENTION")]
    pub keep_versions: Option<Retention>,
    /// The most space all versions may take, such as `10GiB`, `500MB`, `1G` or plain
    /// bytes; the oldest are pruned past it after each full pass [default: no limit].
    #[arg(long, value_name = "SIZE")]
    pub versions_max_size: Option<Size>,
    /// Let through deletions the guard holds back (an emptied source, a mass delete).
    #[arg(long)]
    pub force: bool,
    /// Hold back a pass's deletions if it would delete more than N files [default: more
    /// than half of the mirror and more than 100].
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// Worker threads for copying, gzipping and hashing [default: number of cores; twice
    /// that with --compress into a local folder; 16 for a remote DST].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// The ssh program and its options for a remote DST (host:path, sftp://…), like
    /// rsync's -e: for example "ssh -p 2222 -i ~/.ssh/backup" [default:
    /// $DATASAFE_SSH_COMMAND, then the config's ssh_command, then ssh].
    #[arg(long, value_name = "CMD")]
    pub ssh_command: Option<String>,
    /// The endpoint URL of an s3:// DST's service (a self-hosted one: MinIO, Ceph,
    /// SeaweedFS, Backblaze B2…), for example http://127.0.0.1:8333 [default: the
    /// config's endpoint, then $AWS_ENDPOINT_URL, then the profile's endpoint_url,
    /// then AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

/// Options for what a run prints and logs.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Print what would be done, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// End stdout with one JSON object of the run's counts.
    #[arg(long)]
    pub json: bool,
    /// Append every log line, with a timestamp, to FILE.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Append only errors, with a timestamp, to FILE.
    #[arg(long, value_name = "FILE")]
    pub error_log: Option<PathBuf>,
    /// More detail (-vv for even more).
    #[arg(long, short = 'v', action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors (the summary is still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sync_parses_every_flag() {
        let cli = Cli::try_parse_from([
            "datasafe",
            "sync",
            "a",
            "b",
            "--compress",
            "--checksum",
            "--no-delete",
            "--exclude",
            "*.tmp",
            "--exclude",
            ".stfolder",
            "--dry-run",
            "--json",
            "--jobs",
            "3",
            "--log-file",
            "l",
            "--error-log",
            "e",
            "-v",
        ])
        .unwrap();
        let Command::Sync(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert!(args.mirror.compress && args.mirror.checksum && args.mirror.no_delete);
        assert_eq!(args.mirror.exclude, ["*.tmp", ".stfolder"]);
        assert_eq!(args.mirror.jobs, Some(3));
        assert!(args.output.dry_run && args.output.json);
        assert_eq!(args.output.verbose, 1);
        assert!(Cli::try_parse_from(["datasafe", "sync", "a", "b", "-v", "-q"]).is_err());
        assert!(Cli::try_parse_from(["datasafe", "sync", "a", "b", "--jobs", "0"]).is_err());
    }

    #[test]
    fn verify_source_takes_a_path_or_nothing() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["datasafe", "verify"][..], args].concat())?;
            let Command::Verify(v) = cli.command else {
                panic!("parsed as another command");
            };
            Ok::<_, clap::Error>(v)
        };
        let v = parse(&["d", "--source", "s", "-j", "2", "--json"]).unwrap();
        assert_eq!(v.dst, Some(PathBuf::from("d")));
        assert_eq!(v.source, Some(Some(PathBuf::from("s"))));
        assert_eq!(v.jobs, Some(2));
        assert!(v.json);
        let v = parse(&["--config", "c", "--source"]).unwrap();
        assert_eq!(v.source, Some(None));
        assert_eq!(parse(&["d"]).unwrap().source, None);
        assert!(parse(&["d", "--config", "c"]).is_err());
        assert!(parse(&["d", "-q", "-v"]).is_err());
    }

    #[test]
    fn watch_has_timing_defaults() {
        let cli =
            Cli::try_parse_from(["datasafe", "watch", "a", "b", "--debounce", "50ms"]).unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(
            args.timing.debounce.map(TimeSpan::duration),
            Some(std::time::Duration::from_millis(50))
        );
        assert_eq!(args.timing.rescan, None);
        assert!(
            Cli::try_parse_from(["datasafe", "watch", "a"]).is_err(),
            "SRC needs DST"
        );
        assert!(Cli::try_parse_from(["datasafe", "watch", "a", "b", "--config", "c"]).is_err());
        assert!(Cli::try_parse_from(["datasafe", "watch", "--config", "c"]).is_ok());
    }
}

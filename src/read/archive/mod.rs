//! `datasafe archive`: one file (zip, tar, tar.gz or tar.zst) holding a plain folder,
//! or a mirror as `restore --at` would write it, for mailing, a stick or an upload.
//!
//! The flow is the read side's: list ([`source`]: a walk, or `restore::load`'s plan for
//! a mirror) → read each file ([`read`]: retried while it changes, as `sync` copies) →
//! write the archive ([`zip`]: deflated in parallel and stitched in order; [`tar`]: one
//! stream into zstd's or gzp's compression threads). Where it goes is [`out`]: a temp
//! file beside OUT, renamed into place only when the archive is whole.
//!
//! Archiving only reads SOURCE: it never writes a mirror's index or versions, and it
//! never follows a symlink (links are archived as links).

mod out;
mod read;
mod source;
mod tar;
mod zip;

use crate::config::NotAFolder;
use crate::config::filter::Excludes;
use crate::engine::scan::ScanRules;
use crate::engine::source::Source as Folder;
use crate::output::names::{esc, human_bytes, io_message};
use crate::store::Reader;
use crate::store::layout::STATE_DIR;
use chrono::Local;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
pub use out::Format;
use out::{Dest, Partial, Trickle};
use serde::Serialize;
use source::{Entry, EntryKind};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What the writers share: settings for the run and where its lines go.
pub struct Ctx<'a> {
    /// `--prefix`, with its slash (`""` for none).
    prefix: String,
    /// The compression level for the format.
    level: i32,
    /// Compression threads.
    jobs: usize,
    /// Ctrl-C.
    stop: &'a AtomicBool,
    /// `-v`: one line per file.
    verbose: bool,
    /// Lines go to stderr (the archive is on stdout).
    to_stderr: bool,
    /// The terminal's progress line, if there is one.
    progress: Option<ProgressBar>,
    /// The temp file being written, for error messages.
    writing: PathBuf,
    /// A plain folder's root, open: its files are read through it (`None` for a
    /// mirror, whose stored files the listing found).
    folder: Option<std::sync::Arc<Folder>>,
    /// The names of owners' numbers (tar writes both).
    naming: crate::read::attrs::Naming,
}

/// What `datasafe archive` is asked to do: its command line, as the runner hands it over.
#[derive(Clone, Debug)]
pub struct Request {
    /// A folder, or a datasafe mirror (here, or on another machine).
    pub source: crate::config::Dest,
    /// The archive file, a folder to write a dated archive into, or `-` for stdout.
    pub out: PathBuf,
    /// Archive a mirror as it was at this local time (`--at`, as given).
    pub at: Option<String>,
    /// The format [default: from OUT's extension].
    pub format: Option<Format>,
    /// The compression level.
    pub level: Option<i32>,
    /// Paths to leave out.
    pub exclude: Vec<String>,
    /// Put every entry under this folder name.
    pub prefix: Option<String>,
    /// Replace an existing OUT.
    pub force: bool,
    /// Only warnings, errors and the summary.
    pub quiet: bool,
    /// One line per file archived.
    pub verbose: bool,
    /// End stdout with one JSON object.
    pub json: bool,
    /// Only these paths.
    pub paths: Vec<PathBuf>,
}

/// What a writer archived.
#[derive(Debug, Default)]
pub struct Tally {
    /// Files and links archived.
    files: u64,
    /// Their uncompressed bytes.
    bytes_in: u64,
    /// Paths that could not be archived (or not as a settled snapshot).
    failed: u64,
}

/// Why a writer stopped before the end.
#[derive(Debug)]
pub enum Stop {
    /// Ctrl-C.
    Interrupted,
    /// Bad input, or the archive could not be written: the message says which file and
    /// what to do.
    Fatal(anyhow::Error),
}

/// A fatal [`Stop`] for `error`.
fn fatal(error: impl Into<anyhow::Error>) -> Stop {
    Stop::Fatal(error.into())
}

/// How a run of `archive` ended, once its summary (or the line saying it was
/// interrupted) is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archived {
    /// The archive was written; `failed` paths could not be archived (or not as a
    /// settled snapshot), each said as it happened.
    Whole {
        /// Paths left out or archived unsettled.
        failed: u64,
    },
    /// Ctrl-C: no archive was written.
    Interrupted,
}

impl Ctx<'_> {
    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// An entry's name in the archive: `--prefix` then its relative path.
    fn name(&self, entry: &Entry) -> String {
        let rel = entry.rel.to_string_lossy();
        if entry.rel.to_str().is_none() {
            log::warn!(
                "{} is not valid UTF-8; it is archived under a name with U+FFFD in place of the odd bytes",
                esc(&entry.rel)
            );
        }
        format!("{}{rel}", self.prefix)
    }

    fn write_error(&self, what: &str) -> Stop {
        Stop::Fatal(anyhow::anyhow!(
            "cannot write {}: {what}; check free space and permissions there",
            esc(&self.writing)
        ))
    }

    fn say(&self, line: &str) {
        crate::output::logging::print_line(self.to_stderr, line);
    }

    fn tick(&self) {
        if let Some(bar) = &self.progress {
            bar.inc(1);
        }
    }

    fn done_dir(&self, _entry: &Entry) {
        self.tick();
    }

    fn done_link(&self, entry: &Entry, target: &Path, tally: &mut Tally) {
        tally.files += 1;
        if self.verbose {
            self.say(&format!(
                "Archived link: {} -> {}",
                esc(&entry.rel),
                esc(target)
            ));
        }
        self.tick();
    }

    fn done_file(&self, entry: &Entry, path: &Path, size: u64, settled: bool, tally: &mut Tally) {
        tally.files += 1;
        tally.bytes_in += size;
        if !settled {
            tally.failed += 1;
            log::error!(
                "{} kept changing while being read; the archive holds the last read (run archive again for a settled copy)",
                esc(path)
            );
        }
        if self.verbose {
            self.say(&format!("Archived file: {}", esc(&entry.rel)));
        }
        self.tick();
    }

    fn failed(&self, failure: &read::Failure, tally: &mut Tally) {
        tally.failed += 1;
        log::error!("{failure}");
        self.tick();
    }
}

/// The `--json` object.
#[derive(Serialize)]
struct Summary {
    files: u64,
    bytes_in: u64,
    bytes_out: u64,
    path: String,
    format: &'static str,
    duration_s: f64,
}

/// Runs `datasafe archive` (logging and the Ctrl-C handler are set up by the caller)
/// and says how it ended; an error is bad input or an archive that could not be
/// written (nothing is left under OUT's name then), for the caller to print.
pub fn run(args: &Request, stop: &AtomicBool) -> anyhow::Result<Archived> {
    let started = Instant::now();
    match archive(args, stop, started) {
        Ok(archived) => Ok(archived),
        Err(Stop::Interrupted) => {
            let line = format!(
                "Backup interrupted at {}, Duration: {:.2} seconds; no archive was written",
                crate::output::now(),
                started.elapsed().as_secs_f64()
            );
            crate::output::logging::print_line(true, &line);
            Ok(Archived::Interrupted)
        }
        Err(Stop::Fatal(error)) => Err(error),
    }
}

/// A whole run, up to its printed summary.
fn archive(args: &Request, stop: &AtomicBool, started: Instant) -> Result<Archived, Stop> {
    let usage = |message: String| Stop::Fatal(anyhow::Error::msg(message));
    // A folder on this machine is checked and read by path; one on another machine can
    // only be a mirror, read through its store (`restore::load` connects and checks it).
    let (source, local) = match &args.source {
        crate::config::Dest::Local(path) => (path.clone(), true),
        remote => (remote.display(), false),
    };
    let source = &source;
    let checked = match local {
        true => crate::config::check_dir(source),
        false => Ok(()),
    };
    match checked {
        Ok(()) => {}
        Err(NotAFolder::NotADirectory) => {
            return Err(usage(format!(
                "source {} is not a folder; give a folder or a datasafe mirror",
                esc(source)
            )));
        }
        Err(NotAFolder::Missing(e) | NotAFolder::Unreadable(e)) => {
            return Err(usage(format!(
                "source {} cannot be read: {}; check the path",
                esc(source),
                io_message(&e)
            )));
        }
    }
    let canonical = match local {
        true => std::fs::canonicalize(source).unwrap_or_else(|_| source.clone()),
        false => match (args.source.remote(), args.source.bucket()) {
            (Some(remote), _) => PathBuf::from(&remote.path),
            // A bucket's prefix names it as a folder would (the bucket, for a whole one).
            (_, Some(b)) if b.prefix.is_empty() => PathBuf::from(&b.bucket),
            (_, Some(b)) => PathBuf::from(&b.prefix),
            _ => PathBuf::new(),
        },
    };
    let name = canonical
        .file_name()
        .map_or_else(|| "archive".into(), |n| n.to_os_string());
    let (dest, format) =
        out::resolve(&args.out, args.format, &name, Local::now()).map_err(fatal)?;
    let level = match (format.levels(), args.level) {
        (Some((range, _)), Some(level)) if !range.contains(&level) => {
            return Err(usage(format!(
                "--level {level} is out of range for {}: give {} to {}",
                format.name(),
                range.start(),
                range.end()
            )));
        }
        (Some(_), Some(level)) => level,
        (Some((_, default)), None) => default,
        (None, _) => 0,
    };
    let prefix = match &args.prefix {
        Some(p) => prefix_of(p).map_err(fatal)?,
        None => String::new(),
    };
    let excludes = Excludes::new(&args.exclude).map_err(fatal)?;
    // A mirror is a folder whose store holds an index (looked at through the store:
    // never through a symlink planted for `.datasafe`).
    let is_mirror = !local
        || crate::store::local::Local::open(source).is_ok_and(|store| {
            let index = crate::store::layout::index();
            matches!(store.stat(&index), Ok(Some(s)) if s.kind == crate::model::Kind::File)
        });
    if args.at.is_some() && !is_mirror {
        return Err(usage(format!(
            "--at needs a datasafe mirror, and {} is a plain folder (it has no {STATE_DIR}/index.db); drop --at",
            esc(source)
        )));
    }
    // OUT (and its temp file) are never archived into themselves.
    let skip = match &dest {
        Dest::File(path) if local => leave_out_self(&canonical, path),
        Dest::File(_) | Dest::Stdout => Vec::new(),
    };
    // Everything that can be refused is checked before OUT is touched. A whole plain
    // folder is walked while it is archived; a mirror's plan, or PATH..., is listed first.
    // A plain folder's extended attributes and ACLs go into a tar archive (as GNU tar's
    // --xattrs --acls), its owners too.
    let rules = ScanRules {
        excludes,
        skip: skip.clone(),
        kept: crate::model::Kept {
            xattrs: true,
            acls: true,
            every_namespace: crate::platform::is_root(),
        },
    };
    // Lives until the archive is written: what a mirror's prefix markers stand for is
    // written out there first (beside OUT, on the filesystem chosen for the archive).
    let mut scratch = source::Scratch::at(match &dest {
        Dest::File(path) => {
            let mut name = std::ffi::OsString::from(".");
            name.push(path.file_name().unwrap_or_default());
            name.push(format!(".datasafe-{}.parts", std::process::id()));
            path.with_file_name(name)
        }
        Dest::Stdout => {
            std::env::temp_dir().join(format!("datasafe-archive-{}.parts", std::process::id()))
        }
    });
    // A plain folder is read only through its root handle: every folder, link and file
    // below it is reached from there without passing a symlink.
    let folder = if is_mirror {
        None
    } else {
        Some(Folder::open(source).map(std::sync::Arc::new).map_err(|e| {
            usage(format!(
                "source {} cannot be read: {}; check the path",
                esc(source),
                io_message(&e)
            ))
        })?)
    };
    // The mirror's root folder, for the `--prefix` entry (a local one is looked at by
    // path below); a remote mirror's breaker, which says when its host was given up on.
    let mut mirror_root = None;
    let mut breaker = None;
    let mut naming = crate::read::attrs::Naming::here();
    let listed = if is_mirror {
        let (history, plan) =
            crate::read::restore::load(&args.source, args.at.as_deref(), &args.paths)
                .map_err(fatal)?;
        if !local {
            mirror_root = history
                .store()
                .stat(Path::new(""))
                .ok()
                .flatten()
                .map(|s| s.meta());
            breaker = history.breaker().cloned();
        }
        naming = crate::read::attrs::Naming::recorded(history.owner_names());
        let mut listing = source::of_mirror(&history, &plan, &rules.excludes, &mut scratch, stop);
        listing.entries.retain(|e| !skip.contains(&e.rel));
        Some(listing)
    } else {
        let scopes = crate::read::restore::scopes_of(&args.paths).map_err(fatal)?;
        folder
            .as_ref()
            .filter(|_| !scopes.is_empty())
            .map(|folder| source::of_folder(folder, &scopes, &rules))
    };
    let (partial, sink, writing) = match &dest {
        Dest::File(path) => {
            let (partial, file) = Partial::create(path, args.force).map_err(fatal)?;
            (Some(partial), Sink::File(file), Partial::temp_name(path))
        }
        Dest::Stdout => (None, Sink::Stdout(io::stdout()), PathBuf::from("-")),
    };
    let to_stderr = dest == Dest::Stdout;
    let progress = (!args.quiet && io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} archiving: {pos} entries {elapsed}")
        {
            bar.set_style(style);
        }
        crate::output::logging::set_progress(bar.clone());
        bar
    });
    let ctx = Ctx {
        prefix: prefix.clone(),
        level,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        stop,
        verbose: args.verbose,
        to_stderr,
        progress,
        writing,
        folder,
        naming,
    };
    // The prefix folder itself, as `git archive` writes it.
    let root = match local {
        true => std::fs::metadata(source)
            .ok()
            .map(|m| crate::model::Meta::of(&m)),
        false => mirror_root,
    };
    let top = root.filter(|_| !prefix.is_empty()).map(|meta| Entry {
        rel: PathBuf::new(),
        kind: EntryKind::Dir,
        mode: meta.mode,
        mtime: meta.mtime,
        attrs: crate::model::Attrs::default(),
        link: None,
    });
    let (written, walk_failed) = match listed {
        Some(listing) => {
            // Once the host is given up on, no entry more: each would fail alike.
            let reachable = |_: &Entry| breaker.as_ref().is_none_or(|b| b.tripped().is_none());
            let mut entries = top.into_iter().chain(listing.entries).take_while(reachable);
            (write(sink, format, &mut entries, &ctx), listing.failed)
        }
        None => std::thread::scope(|scope| {
            let (tx, rx) = crossbeam_channel::bounded::<Entry>(4096);
            let (rules, folder) = (&rules, ctx.folder.as_ref());
            let walker = scope.spawn(move || {
                folder.map_or(0, |folder| {
                    source::walk(folder, Path::new(""), rules, |e| tx.send(e).is_ok())
                })
            });
            let mut entries = top.into_iter().chain(rx);
            let written = write(sink, format, &mut entries, &ctx);
            // A writer that stopped early drops the channel, which stops the walk.
            drop(entries);
            (written, walker.join().unwrap_or(0))
        }),
    };
    crate::output::logging::clear_progress();
    let (tally, counted) = written?;
    if let Some(e) = breaker.as_ref().and_then(|b| b.tripped()) {
        // Not a whole archive: nothing under OUT's name (the temp file goes with
        // `partial`).
        return Err(fatal(e));
    }
    let bytes_out = match (&dest, partial) {
        (Dest::File(path), Some(partial)) => {
            let size = std::fs::metadata(&ctx.writing).map_or(counted, |m| m.len());
            if ctx.interrupted() {
                return Err(Stop::Interrupted);
            }
            partial.install().map_err(|e| {
                Stop::Fatal(anyhow::anyhow!(
                    "cannot rename {} to {}: {}; check the folder's permissions",
                    esc(&ctx.writing),
                    esc(path),
                    io_message(&e)
                ))
            })?;
            size
        }
        _ => counted,
    };
    let failed = tally.failed + walk_failed;
    if failed > 0 {
        log::error!("{failed} paths could not be archived; see the errors above");
    }
    let shown = match &dest {
        Dest::File(path) => esc(path).to_string(),
        Dest::Stdout => "-".to_string(),
    };
    let duration = started.elapsed().as_secs_f64();
    ctx.say(&format!(
        "Backup completed at {}, Duration: {duration:.2} seconds, Files backed up: {}",
        crate::output::now(),
        tally.files
    ));
    ctx.say(&format!(
        "Archive: {shown} ({}, {})",
        human_bytes(bytes_out),
        format.name()
    ));
    if args.json {
        let summary = Summary {
            files: tally.files,
            bytes_in: tally.bytes_in,
            bytes_out,
            path: shown,
            format: format.name(),
            duration_s: (duration * 1000.0).round() / 1000.0,
        };
        if let Ok(text) = serde_json::to_string(&summary) {
            ctx.say(&text);
        }
    }
    Ok(Archived::Whole { failed })
}

/// A `--prefix` that is not a relative folder name.
#[derive(Debug, thiserror::Error)]
#[error("--prefix {0:?} must be a relative folder name like project/")]
struct PrefixError(String);

/// `--prefix NAME/` as the text every entry name starts with (`NAME/`).
fn prefix_of(text: &str) -> Result<String, PrefixError> {
    let path = Path::new(text);
    let mut out = String::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => {
                out.push_str(&name.to_string_lossy());
                out.push('/');
            }
            Component::CurDir => {}
            _ => return Err(PrefixError(text.to_string())),
        }
    }
    Ok(out)
}

/// When OUT lies inside SOURCE: its path and its temp file's, relative to SOURCE, to be
/// left out of the archive (said once, as a warning).
fn leave_out_self(source: &Path, out: &Path) -> Vec<PathBuf> {
    let Ok(out_abs) = crate::config::canonical_even_if_missing(out) else {
        return Vec::new();
    };
    let Ok(rel) = out_abs.strip_prefix(source) else {
        return Vec::new();
    };
    log::warn!(
        "{} lies inside {}; it is left out of the archive",
        esc(out),
        esc(source)
    );
    vec![rel.to_path_buf(), Partial::temp_name(rel)]
}

/// Where the archive's bytes go.
enum Sink {
    File(std::fs::File),
    Stdout(io::Stdout),
}

/// Counts the bytes written to stdout.
struct Counting<W> {
    inner: W,
    count: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the archive in `format` into `sink`; returns the tally and the bytes written
/// to stdout (0 for a file: its size is read afterwards).
fn write(
    sink: Sink,
    format: Format,
    entries: &mut dyn Iterator<Item = Entry>,
    ctx: &Ctx<'_>,
) -> Result<(Tally, u64), Stop> {
    const BUF: usize = 256 * 1024;
    let count = Arc::new(AtomicU64::new(0));
    let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
    let tally = match (format, sink) {
        (Format::Zip, Sink::File(file)) => {
            let zip = ::zip::ZipWriter::new(BufWriter::with_capacity(BUF, Trickle::new(file)));
            let (out, tally) = zip::write(zip, entries, ctx)?;
            let out = out.into_inner().map_err(|e| fatal(e.into_error()))?;
            out.file.sync_all().map_err(fatal)?;
            tally
        }
        (Format::Zip, Sink::Stdout(stdout)) => {
            let counting = Counting {
                inner: BufWriter::with_capacity(BUF, stdout),
                count: count.clone(),
            };
            let zip = ::zip::ZipWriter::new_stream(counting);
            let (out, tally) = zip::write(zip, entries, ctx)?;
            out.into_inner().flush().map_err(fatal)?;
            tally
        }
        (format, Sink::File(file)) => {
            let out = BufWriter::with_capacity(BUF, Trickle::new(file));
            let (out, tally) = tar_into(out, format, entries, ctx)?;
            let out = out.into_inner().map_err(|e| fatal(e.into_error()))?;
            out.file.sync_all().map_err(fatal)?;
            tally
        }
        (format, Sink::Stdout(stdout)) => {
            let counting = Counting {
                inner: stdout,
                count: count.clone(),
            };
            let out = BufWriter::with_capacity(BUF, counting);
            let (out, tally) = tar_into(out, format, entries, ctx)?;
            let mut raw = out.into_inner().map_err(|e| fatal(e.into_error()))?;
            raw.flush().map_err(fatal)?;
            tally
        }
    };
    Ok((tally, count.load(Ordering::Relaxed)))
}

/// A tar stream through the format's encoder.
fn tar_into<W: Write + Send + 'static>(
    out: W,
    format: Format,
    entries: &mut dyn Iterator<Item = Entry>,
    ctx: &Ctx<'_>,
) -> Result<(W, Tally), Stop> {
    let fatal = |e: io::Error| ctx.write_error(&io_message(&e));
    match format {
        Format::TarZst => {
            let mut encoder = zstd::Encoder::new(out, ctx.level).map_err(fatal)?;
            let threads = u32::try_from(ctx.jobs).unwrap_or(1);
            encoder.multithread(threads).map_err(fatal)?;
            let (encoder, tally) = tar::write(encoder, entries, ctx)?;
            Ok((encoder.finish().map_err(fatal)?, tally))
        }
        Format::TarGz => {
            use gzp::ZWriter;
            let level = u32::try_from(ctx.level).unwrap_or(6);
            let builder = gzp::par::compress::ParCompressBuilder::<gzp::deflate::Gzip>::new()
                .num_threads(ctx.jobs.max(1))
                .map_err(|e| ctx.write_error(&e.to_string()))?
                .compression_level(gzp::Compression::new(level));
            let encoder = builder.from_writer(out);
            let (mut encoder, tally) = tar::write(encoder, entries, ctx)?;
            let out = encoder
                .finish()
                .map_err(|e| ctx.write_error(&e.to_string()))?;
            Ok((out, tally))
        }
        _ => tar::write(out, entries, ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_a_relative_folder_name_with_one_slash() {
        assert_eq!(prefix_of("proj/").unwrap(), "proj/");
        assert_eq!(prefix_of("proj").unwrap(), "proj/");
        assert_eq!(prefix_of("./a//b/").unwrap(), "a/b/");
        assert!(prefix_of("/abs/").is_err());
        assert!(prefix_of("../up/").is_err());
    }
}
